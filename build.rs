//! Links the functions `mesh proxy` runs at start-up and per request next to each other
//! (`mesh.order`), so the sidecar maps far fewer pages of the binary. Names missing from the
//! binary (a stale file) are ignored: the layout then falls back to the linker's default.
//! Regenerate it after changing dependencies, features or much of the proxy's code:
//! `scripts/order/gen-order.sh . /tmp/order-target mesh.order` (needs perf, curl, taskset;
//! about 10 minutes). The bench's idle RSS column shows when it has gone stale.

fn main() {
    println!("cargo:rerun-if-changed=mesh.order");
    let linux_x86_64 = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = std::path::Path::new(&dir).join("mesh.order");
    if linux_x86_64 && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=mesh=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=mesh=-Wl,--no-warn-symbol-ordering");
    }
}
