//! Prints the protobuf field table (`api-types/src/protobuf/fields.rs`) generated from k8s-pb's
//! prost sources and the served JSON schemas:
//!
//! `cargo run -p api-types --example gen_proto_fields -- ~/.cargo/registry/src/<index>/k8s-pb-0.9.0/src > api-types/src/protobuf/fields.rs`
//!
//! The generator itself lives beside the table (`src/protobuf/gen.rs`), where the up-to-date test
//! runs it too.

#[path = "../src/protobuf/gen.rs"]
mod gen;

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: gen_proto_fields <k8s-pb src dir>");
        return ExitCode::FAILURE;
    };
    let generated = gen::read_sources(std::path::Path::new(&dir))
        .map_err(|e| format!("reading {dir}: {e}"))
        .and_then(|sources| gen::generate(&sources));
    match generated {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_proto_fields: {e}");
            ExitCode::FAILURE
        }
    }
}
