//! The IR text form round-trips for every fixture model: print → parse → print gives the same text, and the parsed
//! graph equals the imported one.

use jiuzhou_compiler::onnx;
use jiuzhou_ir::text;
use jiuzhou_tests::{generated, repo_root};

fn check_round_trip(path: &std::path::Path) {
    let model = onnx::load_model(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let printed = text::print(&model.graph);
    let parsed = text::parse(&printed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reprinted = text::print(&parsed);
    assert!(
        printed == reprinted,
        "{}: print → parse → print differs",
        path.display()
    );
    assert!(
        parsed == model.graph,
        "{}: the parsed graph differs from the imported one",
        path.display()
    );
}

#[test]
fn bundled_model_round_trips() {
    check_round_trip(&repo_root().join("fixtures/tiny_cnn/model.onnx"));
}

macro_rules! round_trip_tests {
    ($($test:ident => $dir:literal,)*) => {$(
        #[test]
        fn $test() {
            let models = generated("JIUZHOU_MODELS", "models", "gen_models.py");
            check_round_trip(&models.join($dir).join("model.onnx"));
        }
    )*};
}

round_trip_tests! {
    alexnet => "bvlc_alexnet",
    densenet121 => "densenet121",
    inception_v1 => "inception_v1",
    inception_v2 => "inception_v2",
    resnet50 => "resnet50",
    shufflenet => "shufflenet",
    squeezenet => "squeezenet",
    vgg19 => "vgg19",
    zfnet512 => "zfnet512",
    bert_layer => "bert_layer",
    llama_layer => "llama_layer",
    dynamic_batch_mlp => "dynamic_batch_mlp",
}

/// Every node-suite model that imports also round-trips (these cover every dtype, attribute kind, sequences,
/// optionals and subgraphs with captures).
#[test]
fn node_suite_models_round_trip() {
    let suite = generated("JIUZHOU_NODE_SUITE", "node", "gen_node_suite.py");
    let cases = jiuzhou_compiler::conformance::list_cases(&suite).expect("the suite is readable");
    let mut imported = 0;
    for case in &cases {
        let path = suite.join(case).join("model.onnx");
        let Ok(model) = onnx::load_model(&path) else {
            continue;
        };
        imported += 1;
        let printed = text::print(&model.graph);
        let parsed = text::parse(&printed).unwrap_or_else(|e| panic!("{case}: {e}\n{printed}"));
        assert_eq!(
            printed,
            text::print(&parsed),
            "{case}: print → parse → print differs"
        );
    }
    assert!(
        imported * 2 > cases.len(),
        "only {imported} of {} node-suite models import",
        cases.len()
    );
}
