fn main() {
    let text = std::fs::read("/tmp/cnt/log.txt").unwrap();
    let d = kubeleash_core::mask::detect::Detectors::new(&[]).unwrap();
    let mut out = Vec::new();
    d.find(&text, &mut out);
    let (l1, l2, acm) = kubeleash_core::mask::detect::prefilter::counters();
    println!("bytes {} chunks {} l1 {} l2 {} acmatches {} spans {}", text.len(), text.len()/8, l1, l2, acm, out.len());
}
