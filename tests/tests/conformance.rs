//! Every case in a target's checked-in pass list must pass: the list only grows, and a regression fails CI.
//!
//! Update a list with `jiuzhou conformance --target T --suite DIR --pass-list tests/conformance/T.txt
//! --update-pass-list`.

use jiuzhou_compiler::Target;
use jiuzhou_compiler::conformance::{self, Status};
use jiuzhou_tests::{generated, repo_root};

fn check_pass_list(target: Target) {
    let suite = generated("JIUZHOU_NODE_SUITE", "node", "gen_node_suite.py");
    let list_path = repo_root()
        .join("tests/conformance")
        .join(format!("{}.txt", target.name()));
    let listed = conformance::read_pass_list(&list_path).expect("pass list is readable");
    assert!(!listed.is_empty(), "{} lists no cases", list_path.display());
    let cases: Vec<String> = listed.into_iter().collect();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results = conformance::run_cases(&suite, &cases, target, jobs);
    let failures: Vec<String> = results
        .iter()
        .filter(|r| r.status != Status::Passed)
        .map(|r| format!("{}: {}", r.name, r.reason.as_deref().unwrap_or("?")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} listed cases no longer pass on {target}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn reference_pass_list_holds() {
    check_pass_list(Target::Reference);
}

#[test]
fn cpu_pass_list_holds() {
    check_pass_list(Target::Cpu);
}
