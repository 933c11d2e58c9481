//! A unified diff of two texts that differ in one place (`kubeleash replay --grants --policy`
//! changes a policy by one insertion): one hunk, three lines of context, `patch` and `git apply`
//! read it.

/// Lines of context around the change.
const CONTEXT: usize = 3;

/// The unified diff from `old` to `new`, headed `--- old_name` and `+++ new_name`; empty when
/// they are equal. The lines that differ are found as what is left between the longest common
/// prefix and suffix, so a text changed in several places comes out as one larger hunk.
///
/// ```text
/// unified("a\nb\n", "a\nx\nb\n", "p", "p (new)") ==
///     "--- p\n+++ p (new)\n@@ -1,2 +1,3 @@\n a\n+x\n b\n"
/// ```
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if prefix == a.len() && prefix == b.len() {
        return String::new();
    }
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_end, b_end) = (a.len() - suffix, b.len() - suffix);
    let start = prefix.saturating_sub(CONTEXT);
    let after = suffix.min(CONTEXT);
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    out.push_str(&format!(
        "@@ -{} +{} @@\n",
        range(start, a_end + after - start),
        range(start, b_end + after - start)
    ));
    for l in &a[start..prefix] {
        line(&mut out, ' ', l);
    }
    for l in &a[prefix..a_end] {
        line(&mut out, '-', l);
    }
    for l in &b[prefix..b_end] {
        line(&mut out, '+', l);
    }
    for l in &a[a_end..a_end + after] {
        line(&mut out, ' ', l);
    }
    out
}

/// A hunk's range as GNU diff writes it: `start,count`, `start` alone for one line, and the
/// line before for none.
fn range(start: usize, count: usize) -> String {
    match count {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        n => format!("{},{n}", start + 1),
    }
}

fn line(out: &mut String, mark: char, l: &str) {
    out.push(mark);
    out.push_str(l);
    if !l.ends_with('\n') {
        out.push_str("\n\\ No newline at end of file\n");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn an_insertion_is_one_hunk_with_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n";
        let new = "1\n2\n3\n4\n5\nx\ny\n6\n7\n8\n";
        assert_eq!(
            unified(old, new, "p", "p (with grants)"),
            "--- p\n+++ p (with grants)\n@@ -3,6 +3,8 @@\n 3\n 4\n 5\n+x\n+y\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn at_the_ends_and_without_a_final_newline() {
        assert_eq!(
            unified("a\nb", "a\nb\nc\n", "p", "q"),
            "--- p\n+++ q\n@@ -1,2 +1,3 @@\n a\n-b\n\\ No newline at end of file\n+b\n+c\n"
        );
        assert_eq!(
            unified("a\n", "x\na\n", "p", "q"),
            "--- p\n+++ q\n@@ -1 +1,2 @@\n+x\n a\n"
        );
        assert_eq!(
            unified("", "x\n", "p", "q"),
            "--- p\n+++ q\n@@ -0,0 +1 @@\n+x\n"
        );
        assert_eq!(unified("same\n", "same\n", "p", "q"), "");
    }

    #[test]
    fn repeated_lines_do_not_confuse_the_suffix() {
        // The suffix may not reach into the prefix: `a` is common to both ends.
        assert_eq!(
            unified("a\n", "a\na\n", "p", "q"),
            "--- p\n+++ q\n@@ -1 +1,2 @@\n a\n+a\n"
        );
    }
}
