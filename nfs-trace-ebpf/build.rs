use which::which;

/// Building this crate needs the `bpf-linker` binary, which cargo cannot
/// express as a dependency: rebuild whenever that binary changes.
fn main() {
    match which("bpf-linker") {
        Ok(p) => println!("cargo:rerun-if-changed={}", p.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found: run `cargo xtask setup`"),
    }
}
