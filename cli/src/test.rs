//! `kubeleash test`: run the `tests:` a policy carries.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::paint::Paint;
use crate::report::{USAGE, load_policy};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy files whose tests to run.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub fn run(a: Args) -> ExitCode {
    let mut compiled = Vec::new();
    let mut broken = false;
    for f in &a.files {
        match load_policy(f) {
            Ok(p) => compiled.push((f, p)),
            Err(_) => broken = true,
        }
    }
    if broken {
        return ExitCode::from(USAGE);
    }
    let p = Paint::stdout(false);
    let (mut passed, mut failed) = (0usize, 0usize);
    for (file, policy) in &compiled {
        let report = policy.run_tests();
        if report.outcomes.is_empty() {
            println!("{}: no tests", file.display());
        }
        for o in &report.outcomes {
            if o.passed {
                passed += 1;
                println!("{}    {}: {}", p.ok("ok"), file.display(), o.name);
                continue;
            }
            failed += 1;
            let want = match &o.expect_rule {
                Some(r) => format!("{} by rule \"{r}\"", o.expect.as_str()),
                None => o.expect.as_str().to_string(),
            };
            let got = match &o.decision.rule {
                Some(r) => format!("{} by rule \"{r}\"", o.decision.effect.as_str()),
                None => o.decision.effect.as_str().to_string(),
            };
            println!("{}  {}: {}", p.no("FAIL"), file.display(), p.bold(&o.name));
            println!("      request:  {}", o.request);
            println!("      expected: {want}");
            println!("      got:      {got}: {}", o.decision.reason);
        }
    }
    let summary = format!("policy tests: {passed} passed, {failed} failed");
    println!(
        "{}",
        if failed > 0 {
            p.no(&summary)
        } else {
            p.ok(&summary)
        }
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
