//! The one list of built-in plugins, each behind a cargo feature (all on by default), and the
//! check that a launcher's plugins have names of their own.

use twistrs_core::Plugin;

use crate::cli::CONTROL;

/// Every plugin this build ships, sorted by name as `--help` lists them. A launcher built with
/// `default-features = false` picks its own (`features = ["wire"]`, or none).
pub fn builtin_plugins() -> Vec<Plugin> {
    #[allow(unused_mut)]
    let mut v: Vec<Plugin> = Vec::new();
    #[cfg(feature = "wire")]
    v.extend(twistrs_wire::plugins());
    #[cfg(feature = "web")]
    v.push(twistrs_web::plugin());
    #[cfg(feature = "mail")]
    v.push(twistrs_mail::plugin());
    #[cfg(feature = "procmon")]
    v.push(twistrs_procmon::plugin());
    #[cfg(feature = "dns")]
    v.push(twistrs_dns::plugin());
    #[cfg(feature = "inetd")]
    v.push(twistrs_inetd::plugin());
    #[cfg(feature = "portforward")]
    v.push(twistrs_portforward::plugin());
    #[cfg(feature = "socks")]
    v.push(twistrs_socks::plugin());
    v.sort_by_key(|p| p.tapname);
    v
}

/// Refuses a list in which two plugins share a name, or a plugin takes the name of a control
/// command: the message names both.
pub fn check_names(plugins: &[Plugin]) -> Result<(), String> {
    for (i, p) in plugins.iter().enumerate() {
        if CONTROL.contains(&p.tapname) {
            return Err(format!(
                "plugin '{}' ({}) has the name of the control command '{}'",
                p.tapname, p.description, p.tapname
            ));
        }
        if let Some(q) = plugins[..i].iter().find(|q| q.tapname == p.tapname) {
            return Err(format!(
                "two plugins are named '{}': '{}' and '{}'",
                p.tapname, q.description, p.description
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_plugins_are_the_enabled_features() {
        let names: Vec<&str> = builtin_plugins().iter().map(|p| p.tapname).collect();
        assert_eq!(names.contains(&"echo"), cfg!(feature = "wire"), "{names:?}");
        assert_eq!(names.contains(&"web"), cfg!(feature = "web"), "{names:?}");
        assert_eq!(names.contains(&"mail"), cfg!(feature = "mail"), "{names:?}");
        assert_eq!(
            names.contains(&"procmon"),
            cfg!(feature = "procmon"),
            "{names:?}"
        );
        assert_eq!(names.contains(&"dns"), cfg!(feature = "dns"), "{names:?}");
        assert_eq!(
            names.contains(&"inetd"),
            cfg!(feature = "inetd"),
            "{names:?}"
        );
        assert_eq!(
            names.contains(&"portforward"),
            cfg!(feature = "portforward"),
            "{names:?}"
        );
        assert_eq!(
            names.contains(&"socks"),
            cfg!(feature = "socks"),
            "{names:?}"
        );
        assert!(check_names(&builtin_plugins()).is_ok());
    }

    fn plugin(tapname: &'static str, description: &'static str) -> Plugin {
        Plugin {
            tapname,
            description,
            options: || twistrs_core::clap::Command::new("x"),
            make_service: |_| Err(twistrs_core::PluginError::new("never built")),
        }
    }

    #[test]
    fn clashing_names_are_refused_naming_both() {
        let e = check_names(&[plugin("echo", "the first echo"), plugin("echo", "my echo")])
            .unwrap_err();
        assert!(
            e.contains("'echo'") && e.contains("the first echo") && e.contains("my echo"),
            "{e}"
        );
        let e = check_names(&[plugin("stop", "a stopper")]).unwrap_err();
        assert!(
            e.contains("control command 'stop'") && e.contains("a stopper"),
            "{e}"
        );
        assert!(
            crate::run(
                ["twistrs", "--help"].map(Into::into),
                vec![plugin("restart", "r")]
            ) == 1
        );
    }
}
