//! systemd-boot on the ESP: the loader binary at the removable-media path every UEFI
//! firmware starts without an NVRAM entry, a `loader.conf` that boots the one entry at
//! once, and a Boot Loader Specification (type 1) entry for it.
//!
//! diskcast does not build the loader: it comes from the image, the host (Debian's
//! `systemd-boot-efi`) or `--loader` ([`crate::EfiArch`] names its paths per
//! architecture); this module says what to write next to it.

use crate::BootEntry;
use diskcast_block::{Error, Result};

/// The Debian package that installs [`crate::EfiArch::systemd_boot`] (each Debian
/// architecture's package carries that architecture's binary only).
pub const PACKAGE: &str = "systemd-boot-efi";

/// The entry's id: the file `loader/entries/diskcast.conf`.
pub const ENTRY_ID: &str = "diskcast";

/// The configuration files to store on the ESP next to the loader, as (path relative to
/// the ESP's root, bytes): `loader/loader.conf` (boot `entry` at once, no editor) and
/// `loader/entries/diskcast.conf`.
pub fn config_files(entry: &BootEntry) -> Result<Vec<(String, Vec<u8>)>> {
    check_entry(entry)?;
    let loader = format!("default {ENTRY_ID}.conf\ntimeout 0\neditor no\n");
    let mut conf = format!("title {}\nlinux {}\n", entry.title, entry.kernel);
    if let Some(initrd) = &entry.initrd {
        conf.push_str(&format!("initrd {initrd}\n"));
    }
    conf.push_str(&format!("options {}\n", entry.cmdline));
    Ok(vec![
        ("loader/loader.conf".to_string(), loader.into_bytes()),
        (format!("loader/entries/{ENTRY_ID}.conf"), conf.into_bytes()),
    ])
}

/// A Boot Loader Specification entry is one `key value` per line: a line break or other
/// control character in a value would start a new key, so it is refused; paths are
/// absolute on the ESP.
fn check_entry(entry: &BootEntry) -> Result<()> {
    let fields = [("title", Some(&entry.title)), ("kernel", Some(&entry.kernel)), ("initrd", entry.initrd.as_ref())];
    for (field, value) in fields.into_iter().chain([("cmdline", Some(&entry.cmdline))]) {
        if let Some(v) = value
            && v.chars().any(char::is_control)
        {
            return Err(Error::argument(format!("the boot entry's {field} {v:?} holds a control character")));
        }
    }
    for (field, path) in [("kernel", Some(&entry.kernel)), ("initrd", entry.initrd.as_ref())] {
        if let Some(p) = path
            && (!p.starts_with('/') || p.contains(char::is_whitespace))
        {
            return Err(Error::argument(format!(
                "the boot entry's {field} path {p:?} must be absolute on the ESP, without spaces"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> BootEntry {
        BootEntry {
            title: "diskcast".into(),
            kernel: "/diskcast/vmlinuz".into(),
            initrd: Some("/diskcast/initrd.img".into()),
            cmdline: "root=PARTUUID=x rw".into(),
        }
    }

    #[test]
    fn loader_conf_and_entry() {
        let files = config_files(&entry()).unwrap();
        assert_eq!(files[0].0, "loader/loader.conf");
        assert_eq!(files[0].1, b"default diskcast.conf\ntimeout 0\neditor no\n");
        assert_eq!(files[1].0, "loader/entries/diskcast.conf");
        let text = String::from_utf8(files[1].1.clone()).unwrap();
        assert_eq!(
            text,
            "title diskcast\nlinux /diskcast/vmlinuz\ninitrd /diskcast/initrd.img\noptions root=PARTUUID=x rw\n"
        );
        let mut e = entry();
        e.initrd = None;
        let text = String::from_utf8(config_files(&e).unwrap()[1].1.clone()).unwrap();
        assert!(!text.contains("initrd"), "{text}");
    }

    #[test]
    fn line_breaks_cannot_inject_keys() {
        let mut e = entry();
        e.cmdline = "quiet\nlinux /evil".into();
        assert!(config_files(&e).unwrap_err().to_string().contains("control character"));
        let mut e = entry();
        e.kernel = "vmlinuz".into();
        assert!(config_files(&e).unwrap_err().to_string().contains("absolute"));
    }
}
