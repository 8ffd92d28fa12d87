//! Compiles berth's `.proto` tree with protox (no system protoc), generates
//! prost messages, tonic gRPC clients and servers, and typed ttrpc stubs for
//! the services shims speak, and saves the encoded descriptor set so the
//! crate can decode any `Any` by name at run time.

// Build scripts talk to cargo on stdout.
#![allow(clippy::print_stdout)]

mod ttrpc_codegen;

use std::path::{Path, PathBuf};

/// Packages whose services travel over ttrpc rather than gRPC.
const TTRPC_PACKAGES: &[&str] = &["containerd.task.v2", "containerd.services.events.ttrpc.v1"];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));

    let mut files = Vec::new();
    collect_protos(&root, &root, &mut files);
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let mut compiler = protox::Compiler::new([&root]).expect("protox include path");
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files(&files)
        .unwrap_or_else(|e| panic!("compiling protos: {e:?}"));
    let fds = compiler.file_descriptor_set();
    std::fs::write(out.join("berth_descriptor.bin"), compiler.encode_file_descriptor_set())
        .expect("write descriptor set");

    let grpc = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .service_generator();
    let mut config = prost_build::Config::new();
    config
        .service_generator(Box::new(ttrpc_codegen::Split::new(grpc, TTRPC_PACKAGES)))
        .enable_type_names()
        .include_file("_includes.rs")
        .out_dir(&out);
    config.compile_fds(fds).expect("code generation");
}

/// Finds every `.proto` file below `dir`, as paths relative to `root`.
fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read proto dir") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "src" && name != "build" && name != "target" {
                // A directory's time changes when a file is added to it.
                println!("cargo:rerun-if-changed={}", path.display());
                collect_protos(root, &path, out);
            }
        } else if path.extension().is_some_and(|e| e == "proto") {
            let rel = path.strip_prefix(root).expect("below root");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}
