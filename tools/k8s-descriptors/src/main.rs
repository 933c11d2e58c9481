//! `k8s-descriptors ROOT OUT FILE...`: compile Kubernetes' `generated.proto` files (paths
//! relative to ROOT, which holds `k8s.io/<module>/...`) into one `FileDescriptorSet` at OUT,
//! with imports included and source locations dropped (the decoder needs names, numbers and
//! types only).

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: k8s-descriptors ROOT OUT FILE...";
    let root = args.next().ok_or(usage)?;
    let out = args.next().ok_or(usage)?;
    let files: Vec<String> = args.collect();
    if files.is_empty() {
        return Err(usage.into());
    }
    let mut set = protox::Compiler::new([root])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(&files)?
        .file_descriptor_set();
    set.file.sort_by(|a, b| a.name.cmp(&b.name));
    std::fs::write(&out, set.encode_to_vec())?;
    eprintln!("k8s-descriptors: {} files -> {out}", set.file.len());
    Ok(())
}
