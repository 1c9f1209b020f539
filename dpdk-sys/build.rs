//! Finds the system DPDK with pkg-config (`libdpdk`, 22.11), generates bindings for the
//! functions and types offloadd uses with bindgen, and compiles the C shim for the
//! inline fast-path functions with the same flags DPDK asks for.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// DPDK's own compile flags (`-include rte_config.h`, `-march=...`, include paths): the
/// shim and bindgen must see the headers exactly as DPDK's build did.
fn dpdk_cflags() -> Vec<String> {
    let pc = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(&pc)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| panic!("dpdk-sys: cannot run {pc}: {e}"));
    if !out.status.success() {
        panic!(
            "dpdk-sys: `{pc} --cflags libdpdk` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Tokens, with `-include FILE` kept as one flag pair.
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!(
                "dpdk-sys needs the system DPDK 22.11 (Debian 12: apt-get install dpdk-dev libdpdk-dev pkg-config clang libclang-dev): {e}"
            )
        });
    if !lib.version.starts_with("22.11") {
        println!(
            "cargo:warning=dpdk-sys is written against DPDK 22.11; found {}",
            lib.version
        );
    }
    let cflags = dpdk_cflags();

    let mut build = cc::Build::new();
    build.file("shim/shim.c").include("shim").opt_level(3);
    build.flag_if_supported("-Wno-deprecated-declarations");
    for f in &cflags {
        build.flag(f);
    }
    build.compile("offloadd_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(&cflags)
        .clang_arg("-Ishim")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        // The shim.
        .allowlist_function("offloadd_.*")
        .allowlist_var("OFFLOADD_.*")
        // EAL.
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_thread_unregister")
        .allowlist_function("rte_dev_probe")
        .allowlist_function("rte_eal_hotplug_remove")
        // ethdev.
        .allowlist_function("rte_eth_dev_get_port_by_name")
        .allowlist_function("rte_eth_dev_get_name_by_port")
        .allowlist_function("rte_eth_dev_info_get")
        .allowlist_function("rte_eth_dev_configure")
        .allowlist_function("rte_eth_dev_adjust_nb_rx_tx_desc")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_tx_queue_setup")
        .allowlist_function("rte_eth_dev_start")
        .allowlist_function("rte_eth_dev_stop")
        .allowlist_function("rte_eth_dev_close")
        .allowlist_function("rte_eth_dev_socket_id")
        .allowlist_function("rte_eth_macaddr_get")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_eth_dev_rss_reta_update")
        .allowlist_function("rte_eth_dev_rss_reta_query")
        .allowlist_function("rte_eth_dev_rss_hash_conf_get")
        .allowlist_function("rte_eth_stats_get")
        .allowlist_function("rte_eth_dev_is_valid_port")
        // mbufs and mempools.
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("rte_mempool_avail_count")
        .allowlist_function("rte_mempool_in_use_count")
        .allowlist_type("rte_eth_conf")
        .allowlist_type("rte_eth_dev_info")
        .allowlist_type("rte_eth_rss_reta_entry64")
        .allowlist_type("rte_eth_stats")
        .allowlist_type("rte_ether_addr")
        // Only ever handled through pointers: no layout needed (and rte_mbuf's markers
        // and cache alignment are what bindgen handles worst).
        .opaque_type("rte_mbuf")
        .opaque_type("rte_mempool")
        .opaque_type("rte_device")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .generate()
        .expect("dpdk-sys: bindgen failed on the DPDK headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .expect("dpdk-sys: cannot write bindings");
}
