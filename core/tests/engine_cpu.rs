//! The CPU build of llama.cpp: the default build leaves ggml's AMX kernels out, since they
//! segfault on some Xeons on the first decode (llama.cpp #20824). Two checks: this build has
//! none (at runtime, on whatever CPU runs the tests), and the flags `.cargo/config.toml` passes
//! to llama.cpp's compiler do leave them out for an AMX CPU (compiling ggml's AMX source for
//! Sapphire Rapids with them, on any x86-64 machine).

use std::path::{Path, PathBuf};
use std::process::Command;

use cada_core::engine::cpu;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn no_amx_kernels() {
    assert!(!cpu::amx_kernels(), "this build has ggml's AMX kernels");
    let extra = cpu::extra_buffer_types();
    assert!(
        !extra.iter().any(|b| b.to_uppercase().contains("AMX")),
        "{extra:?}"
    );
    let info = cpu::system_info();
    assert!(info.contains("CPU"), "{info}");
    assert!(!info.contains("AMX_INT8 = 1"), "{info}");
}

/// The C++ flags `.cargo/config.toml` gives every C/C++ build (llama.cpp's among them).
fn configured_cxxflags() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(".cargo/config.toml")).expect("config");
    let config: toml::Value = toml::from_str(&text).expect("TOML");
    let flags = config["env"]["CXXFLAGS"].as_str().expect("env.CXXFLAGS");
    flags.split_whitespace().map(str::to_string).collect()
}

/// llama.cpp's sources, as cargo fetched them for llama-cpp-sys-2.
fn llama_cpp_sources() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let manifest = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "llama-cpp-sys-2")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("llama-cpp-sys-2 is a dependency");
    Path::new(manifest)
        .parent()
        .expect("crate dir")
        .join("llama.cpp/ggml")
}

/// Compiles ggml's AMX source for an AMX CPU the way llama.cpp's CMake does with GGML_NATIVE
/// there (CMAKE_CXX_FLAGS first, then `-march=native`, which gcc expands to the CPU name and
/// explicit `-mamx-*` flags) and returns the symbols it defines.
fn amx_object_symbols(flags: &[String]) -> String {
    let ggml = llama_cpp_sources();
    let dir = tempfile::tempdir().expect("tempdir");
    let obj = dir.path().join("amx.o");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let status = Command::new(&cxx)
        .args(flags)
        .args([
            "-std=c++17",
            "-O0",
            "-march=sapphirerapids",
            "-mamx-tile",
            "-mamx-int8",
            "-mamx-bf16",
        ])
        .arg(format!("-I{}", ggml.join("include").display()))
        .arg(format!("-I{}", ggml.join("src").display()))
        .arg(format!("-I{}", ggml.join("src/ggml-cpu").display()))
        .arg("-c")
        .arg(ggml.join("src/ggml-cpu/amx/amx.cpp"))
        .arg("-o")
        .arg(&obj)
        .status()
        .expect("the C++ compiler runs");
    assert!(status.success(), "{cxx} failed on ggml's amx.cpp");
    let nm = Command::new("nm")
        .arg("-C")
        .arg(&obj)
        .output()
        .expect("nm runs");
    String::from_utf8_lossy(&nm.stdout).into_owned()
}

#[test]
fn the_configured_flags_leave_the_amx_kernels_out_on_an_amx_cpu() {
    let flags = configured_cxxflags();
    assert!(!flags.is_empty());
    // Without them, an AMX CPU gets the kernels (so this check can fail)...
    let plain = amx_object_symbols(&[]);
    assert!(plain.contains("ggml_backend_amx_buffer_type"), "{plain}");
    // ...and with them it does not.
    let configured = amx_object_symbols(&flags);
    assert!(
        !configured.contains("amx"),
        "AMX symbols with {flags:?}:\n{configured}"
    );
}
