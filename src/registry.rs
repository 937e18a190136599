//! The one list of built-in plugins.

use twistrs_core::Plugin;

/// Every plugin this binary ships, sorted by name as `--help` lists them.
pub fn builtin_plugins() -> Vec<Plugin> {
    let mut v = twistrs_wire::plugins();
    v.push(twistrs_web::plugin());
    v.push(twistrs_mail::plugin());
    v.sort_by_key(|p| p.tapname);
    v
}
