//! The man pages in man/ match the clap definitions; `UPDATE_MAN=1 cargo test` rewrites them.

#[test]
fn man_pages_are_current() {
    let pages = twistrs::cli::man_pages(&twistrs::builtin_plugins());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for (name, text) in &pages {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, text).expect("write man page");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.clone());
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    on_disk.retain(|n| n.ends_with(".1"));
    on_disk.sort();
    let mut want: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert!(
        stale.is_empty(),
        "stale man pages {stale:?}: run UPDATE_MAN=1 cargo test --test it man"
    );
    assert_eq!(on_disk, want, "one page per command, no leftovers");
}
