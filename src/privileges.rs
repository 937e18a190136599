//! Dropping privileges after the ports are bound: `--uid`, `--gid`, `--euid`, `--chroot`.
//!
//! Order as twistd and as the kernel needs it: chroot while still root, then the group, the
//! supplementary groups, then the user last. Names or numbers are accepted. Every name is
//! looked up when the options are read, before any chroot: a lookup inside the jail
//! (initgroups, getpwuid) would load the NSS modules found there, as root.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

/// Who to become.
#[derive(Debug, Clone)]
pub struct Target {
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
    pub euid_only: bool,
    /// The supplementary groups to take with `uid` (the user's, as initgroups would give,
    /// or only `gid` for a uid no user has), looked up now, before any chroot.
    pub groups: Option<Vec<Gid>>,
}

/// Resolves `--uid`/`--gid` (names or numbers); the group defaults to the user's primary one.
pub fn resolve(uid: Option<&str>, gid: Option<&str>, euid_only: bool) -> Result<Target, String> {
    let user: Option<(Uid, Option<User>)> = match uid {
        None => None,
        Some(u) => Some(match u.parse::<u32>() {
            Ok(n) => {
                let id = Uid::from_raw(n);
                (id, User::from_uid(id).ok().flatten())
            }
            Err(_) => {
                let usr = User::from_name(u)
                    .map_err(|e| format!("--uid {u}: {e}"))?
                    .ok_or_else(|| format!("--uid {u}: no such user"))?;
                (usr.uid, Some(usr))
            }
        }),
    };
    let gid = match gid {
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => Gid::from_raw(n),
            Err(_) => {
                Group::from_name(g)
                    .map_err(|e| format!("--gid {g}: {e}"))?
                    .ok_or_else(|| format!("--gid {g}: no such group"))?
                    .gid
            }
        }),
        // A uid with no passwd entry has no primary group: keeping root's group would leave
        // the daemon in group 0, so it is refused, as twistd refuses it (getpwuid fails).
        None => match &user {
            Some((id, None)) => {
                return Err(format!(
                    "--uid {id}: no user has that number, so it has no primary group; give --gid too"
                ));
            }
            Some((_, Some(u))) => Some(u.gid),
            None => None,
        },
    };
    let groups = match &user {
        None => None,
        Some((_, Some(usr))) => {
            let name = CString::new(usr.name.as_bytes())
                .map_err(|_| format!("--uid {}: the user's name holds a NUL", usr.uid))?;
            let primary = gid.unwrap_or(usr.gid);
            let list = nix::unistd::getgrouplist(&name, primary)
                .map_err(|e| format!("--uid {}: cannot list its groups: {e}", usr.name))?;
            Some(list)
        }
        Some((_, None)) => gid.map(|g| vec![g]),
    };
    Ok(Target {
        uid: user.map(|(id, _)| id),
        gid,
        euid_only,
        groups,
    })
}

impl Target {
    /// True if there is anything to drop.
    pub fn any(&self) -> bool {
        self.uid.is_some() || self.gid.is_some()
    }

    /// Who a file must be readable by once privileges are dropped, for messages: the user's
    /// name (or number), else the group's, else whoever runs now.
    pub fn describe(&self) -> String {
        match (self.uid, self.gid) {
            (Some(u), _) => User::from_uid(u)
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {u}"), |usr| usr.name),
            (None, Some(g)) => Group::from_gid(g)
                .ok()
                .flatten()
                .map_or_else(|| format!("gid {g}"), |grp| format!("group {}", grp.name)),
            (None, None) => User::from_uid(Uid::effective())
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {}", Uid::effective()), |usr| usr.name),
        }
    }

    /// twistd's warning (`switchUID`'s) when `-u` names the user this process already runs
    /// as (its real uid; its effective one with `--euid`): a setup that probably meant to
    /// start as root. Not an error: the start goes on.
    pub fn already(&self) -> Option<String> {
        let (e, now) = if self.euid_only {
            ("e", Uid::effective())
        } else {
            ("", Uid::current())
        };
        self.uid.filter(|u| *u == now).map(|u| {
            format!(
                "tried to drop privileges and set{e}uid {u} but {e}uid is already {now}; \
                 should we be root? Continuing."
            )
        })
    }

    /// Becomes the target user and group. Already being them is only worth a warning.
    pub fn drop_privileges(&self) -> Result<(), String> {
        let (uid, gid) = (self.uid, self.gid);
        let e = if self.euid_only { "e" } else { "" };
        if let Some(w) = self.already() {
            // A restart's successor is the user its predecessor dropped to: no news.
            if !crate::upgrade::inherits() {
                log::warn!(target: "twistrs.launcher", "{w}");
            }
            if gid.is_none_or(|g| g == Gid::current()) {
                log::info!(target: "twistrs.launcher", "set {e}uid/{e}gid {}/{}",
                    Uid::effective(), Gid::effective());
                return Ok(());
            }
        }
        let fail = |e: nix::Error| {
            format!(
                "failed to set uid/gid {}/{}: {e} (are you root?) -- exiting.",
                uid.map_or("-".into(), |u| u.to_string()),
                gid.map_or("-".into(), |g| g.to_string())
            )
        };
        if let Some(g) = gid {
            if self.euid_only {
                nix::unistd::setegid(g).map_err(fail)?;
            } else {
                nix::unistd::setgid(g).map_err(fail)?;
            }
        }
        if let Some(u) = uid {
            // Supplementary groups: the target user's, not root's; with --euid too, as
            // twistd's switchUID does, or files would be checked against root's groups.
            // As initgroups would set them, from the list looked up before any chroot.
            if let Some(groups) = &self.groups {
                nix::unistd::setgroups(groups).map_err(fail)?;
            }
            if self.euid_only {
                nix::unistd::seteuid(u).map_err(fail)?;
            } else {
                nix::unistd::setuid(u).map_err(fail)?;
            }
        }
        // twistd's words: "set euid/egid" when only the effective ids changed.
        log::info!(target: "twistrs.launcher", "set {e}uid/{e}gid {}/{}",
            Uid::effective(), Gid::effective());
        Ok(())
    }
}

/// Chroots to `dir` and moves to its root.
pub fn chroot(dir: &std::path::Path) -> Result<(), String> {
    nix::unistd::chroot(dir).map_err(|e| format!("cannot chroot to {}: {e}", dir.display()))?;
    std::env::set_current_dir("/").map_err(|e| format!("cannot enter the chroot: {e}"))
}
