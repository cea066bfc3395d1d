//! Refuses to make a release binary whose JPEG decoder silently lost its SIMD.
//!
//! mozjpeg-sys builds libjpeg-turbo's SIMD code only when `nasm` is on the
//! PATH, and says so in a build-script warning that cargo hides for
//! dependencies. Without it every JPEG thumbnail costs ~1.2× as much (the
//! IDCT and colour conversion in plain C), and nothing tells the operator.
//! mozjpeg-sys records what it built in the `jconfig.h` it exports (the
//! `DEP_JPEG_INCLUDE` metadata of its `links = "jpeg"`), so this reads the
//! truth rather than guessing from the PATH: a release build without SIMD
//! stops with the fix, unless `MEDIAFLOW_ALLOW_NO_SIMD=1` asks for it anyway;
//! a debug build only warns. `MEDIAFLOW_JPEG_SIMD` is passed to the crate so
//! the server can log it at start-up.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MEDIAFLOW_ALLOW_NO_SIMD");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let include = std::env::var_os("DEP_JPEG_INCLUDE").unwrap_or_default();
    let jconfig: Option<PathBuf> = std::env::split_paths(&include).map(|d| d.join("jconfig.h")).find(|p| p.is_file());
    let simd = match &jconfig {
        Some(path) => {
            // Rewritten whenever mozjpeg-sys is rebuilt (e.g. after nasm is
            // installed and `cargo clean -p mozjpeg-sys`), so this reruns.
            println!("cargo:rerun-if-changed={}", path.display());
            std::fs::read_to_string(path).is_ok_and(|h| h.contains("#define WITH_SIMD 1"))
        }
        None => false,
    };
    println!("cargo:rustc-env=MEDIAFLOW_JPEG_SIMD={}", if simd { "1" } else { "0" });
    // Only x86 needs nasm; elsewhere SIMD comes from the C compiler or not at all.
    if simd || !matches!(arch.as_str(), "x86_64" | "x86") {
        return;
    }
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let allowed = std::env::var("MEDIAFLOW_ALLOW_NO_SIMD").is_ok_and(|v| v == "1");
    // mozjpeg-sys does not rebuild by itself once nasm is there.
    let clean = if release { "cargo clean --release -p mozjpeg-sys" } else { "cargo clean -p mozjpeg-sys" };
    let fix = format!(
        "install nasm (Debian/Ubuntu: `sudo apt-get install nasm`, or run scripts/setup.sh), then `{clean}` and build again"
    );
    if release && !allowed {
        eprintln!(
            "\nerror: libjpeg-turbo (mozjpeg-sys) was built without its SIMD code because `nasm` was not found; \
             this release binary would decode JPEGs about 1.2x slower.\n  fix: {fix}.\n  \
             To build the slower binary anyway, set MEDIAFLOW_ALLOW_NO_SIMD=1.\n"
        );
        std::process::exit(1);
    }
    println!("cargo:warning=libjpeg-turbo was built without SIMD (nasm missing): JPEG decoding is ~1.2x slower; {fix}");
}
