//! Imports an ONNX model and prints its IR in the text form: `cargo run -p jiuzhou-compiler --example print_ir --
//! model.onnx`. Handy to see what the importer made of a model (upgrades, captures, inferred types).

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: print_ir MODEL.onnx");
        return ExitCode::FAILURE;
    };
    match jiuzhou_compiler::onnx::load_model(path.as_ref()) {
        Ok(m) => {
            print!("{}", jiuzhou_ir::text::print(&m.graph));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}
