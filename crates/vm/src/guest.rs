//! Making a container's root filesystem boot as a VM: the files a VM needs that a
//! container never has (fstab, hostname, a first-boot machine id, a way in, a network
//! configuration, a service for the image's entrypoint).
//!
//! Every change is made on the [`Tree`] (new inline files, replaced content): the
//! source image is never touched. Each change is reported as one line, and secrets (the
//! password hash) never appear in those lines.

use diskcast_block::{Error, Result};
use diskcast_part::Uuid;
use diskcast_tree::{FileData, FileType, Kind, Meta, Node, NodeId, Timestamp, Tree};

/// The largest configuration file of the image read for editing (`/etc/shadow`,
/// `/etc/fstab`, `/etc/network/interfaces`, `/etc/hosts`).
const CONFIG_LIMIT: u64 = 4 << 20;
/// The largest `--ssh-key` file.
pub const SSH_KEYS_LIMIT: u64 = 1 << 20;

/// The image's ENTRYPOINT and CMD, as the service running them needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entrypoint {
    /// ENTRYPOINT followed by CMD.
    pub argv: Vec<String>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// The working directory.
    pub workdir: Option<String>,
    /// `user[:group]`.
    pub user: Option<String>,
}

/// What to change in the guest besides what every VM gets (fstab, empty machine-id,
/// DHCP when the image has a network manager diskcast knows).
#[derive(Debug, Clone, Default)]
pub struct GuestOptions {
    /// `/etc/hostname`.
    pub hostname: Option<String>,
    /// root's password as a crypt(3) hash, for `/etc/shadow`.
    pub root_password_hash: Option<String>,
    /// Public keys for `/root/.ssh/authorized_keys` (OpenSSH format).
    pub ssh_keys: Option<Vec<u8>>,
    /// Run the image's entrypoint as a systemd service at boot.
    pub run_entrypoint: Option<Entrypoint>,
    /// `--run-entrypoint` was asked for but the source is not a container image.
    pub run_entrypoint_without_config: bool,
}

/// The partitions the guest mounts.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// The root partition's unique GUID.
    pub root: Uuid,
    /// The ESP's unique GUID.
    pub esp: Uuid,
}

/// What [`prepare`] did.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// One line per change.
    pub changes: Vec<String>,
    /// Kernel arguments the changes rely on (`net.ifnames=0` for an ifupdown stanza
    /// naming eth0).
    pub cmdline: Vec<String>,
}

/// Checks the options that need no tree (so a bad `--hostname` fails before the image is
/// read).
pub fn validate(opts: &GuestOptions) -> Result<()> {
    if let Some(h) = &opts.hostname {
        check_hostname(h)?;
    }
    if let Some(h) = &opts.root_password_hash {
        check_hash(h)?;
    }
    if let Some(k) = &opts.ssh_keys {
        check_keys(k)?;
    }
    if opts.run_entrypoint_without_config {
        return Err(Error::argument(
            "--run-entrypoint runs a container image's ENTRYPOINT/CMD; this source is not a container image",
        ));
    }
    if let Some(e) = &opts.run_entrypoint
        && e.argv.is_empty()
    {
        return Err(Error::argument("--run-entrypoint: the image has neither ENTRYPOINT nor CMD"));
    }
    Ok(())
}

/// Applies everything to `tree`.
pub fn prepare(tree: &mut Tree, opts: &GuestOptions, ids: &Ids, now: i64) -> Result<Prepared> {
    validate(opts)?;
    let mut p = Prepared::default();
    fstab(tree, ids, now, &mut p)?;
    machine_id(tree, now, &mut p)?;
    if let Some(h) = &opts.hostname {
        hostname(tree, h, now, &mut p)?;
    }
    if let Some(h) = &opts.root_password_hash {
        root_password(tree, h, now, &mut p)?;
    }
    if let Some(k) = &opts.ssh_keys {
        ssh_keys(tree, k, now, &mut p)?;
    }
    network(tree, now, &mut p)?;
    if let Some(e) = &opts.run_entrypoint {
        entrypoint_service(tree, e, now, &mut p)?;
    }
    Ok(p)
}

/// Where systemd's binary is when the image has systemd.
const SYSTEMD: [&str; 2] = ["/usr/lib/systemd/systemd", "/lib/systemd/systemd"];
/// Where systemd's unit files are installed.
const UNIT_DIRS: [&str; 2] = ["/usr/lib/systemd/system", "/lib/systemd/system"];

fn has_systemd(tree: &Tree) -> bool {
    SYSTEMD.iter().any(|p| is_file(tree, p))
}

fn is_file(tree: &Tree, path: &str) -> bool {
    tree.metadata(path.as_bytes()).is_ok_and(|m| m.file_type == FileType::File)
}

/// `/etc/fstab`: root by PARTUUID, the ESP at `/boot/efi` (or `/efi` when the image has
/// that directory and no `/boot/efi`). Lines of an existing fstab that mount anything
/// else are kept.
fn fstab(tree: &mut Tree, ids: &Ids, now: i64, p: &mut Prepared) -> Result<()> {
    let efi = if tree.exists(b"/efi") && !tree.exists(b"/boot/efi") { "/efi" } else { "/boot/efi" };
    tree.create_dir_all(efi.as_bytes(), &dir_meta(now))?;
    let mut text = format!(
        "# Written by diskcast vm: this disk's root and EFI System partitions.\n\
         PARTUUID={}\t/\text4\trw,relatime\t0\t1\n\
         PARTUUID={}\t{efi}\tvfat\tumask=0077,nofail\t0\t2\n",
        ids.root, ids.esp
    );
    let old = tree.read_optional(b"/etc/fstab", CONFIG_LIMIT)?.unwrap_or_default();
    let kept: Vec<String> = String::from_utf8_lossy(&old)
        .lines()
        .filter(|l| {
            let mut f = l.split_whitespace();
            let (Some(spec), Some(dir)) = (f.next(), f.next()) else { return false };
            !spec.starts_with('#') && !matches!(dir, "/" | "/boot/efi" | "/efi" | "/boot")
        })
        .map(str::to_string)
        .collect();
    for l in &kept {
        text.push_str(l);
        text.push('\n');
    }
    replace(tree, "/etc/fstab", text.into_bytes(), 0o644, now)?;
    p.changes.push(format!("/etc/fstab: root and ESP ({efi}) by PARTUUID, {} other lines kept", kept.len()));
    Ok(())
}

/// `/etc/machine-id` present and empty: systemd takes the boot as the first one and
/// makes a new id, so clones of one disk do not share it. A D-Bus copy of the old id
/// goes too.
fn machine_id(tree: &mut Tree, now: i64, p: &mut Prepared) -> Result<()> {
    replace(tree, "/etc/machine-id", Vec::new(), 0o444, now)?;
    if let Ok(dir) = tree.resolve(b"/var/lib/dbus", true)
        && let Some(id) = tree.lookup(dir, b"machine-id")
        && tree.node(id).as_file().is_some()
    {
        tree.unlink(dir, b"machine-id");
        p.changes.push("/var/lib/dbus/machine-id removed".into());
    }
    p.changes.push("/etc/machine-id emptied (a new id on first boot)".into());
    Ok(())
}

fn check_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::argument(format!(
            "--hostname {h:?}: letters, digits and hyphens, dot-separated labels of at most 63 characters"
        )))
    }
}

fn hostname(tree: &mut Tree, h: &str, now: i64, p: &mut Prepared) -> Result<()> {
    replace(tree, "/etc/hostname", format!("{h}\n").into_bytes(), 0o644, now)?;
    let short = h.split('.').next().unwrap_or(h);
    let old = tree.read_optional(b"/etc/hosts", CONFIG_LIMIT)?;
    let mut hosts = String::from_utf8_lossy(
        old.as_deref().unwrap_or(b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    )
    .into_owned();
    let named = hosts.lines().any(|l| !l.trim_start().starts_with('#') && l.split_whitespace().skip(1).any(|n| n == h));
    if !named {
        if !hosts.is_empty() && !hosts.ends_with('\n') {
            hosts.push('\n');
        }
        let names = if short == h { h.to_string() } else { format!("{h} {short}") };
        hosts.push_str(&format!("127.0.1.1\t{names}\n"));
        replace(tree, "/etc/hosts", hosts.into_bytes(), 0o644, now)?;
    }
    p.changes.push(format!("/etc/hostname: {h}"));
    Ok(())
}

fn check_hash(h: &str) -> Result<()> {
    if h.is_empty() || h.contains([':', '\n', '\r']) || h.chars().any(char::is_whitespace) {
        // Never echo the hash itself.
        return Err(Error::argument(
            "--root-password-hash: not a crypt(3) hash (no ':' or whitespace; make one with `openssl passwd -6` or `mkpasswd`)",
        ));
    }
    Ok(())
}

/// root's field in `/etc/shadow` (the line is added when missing, the file created with
/// Debian's mode when the image has none).
fn root_password(tree: &mut Tree, hash: &str, now: i64, p: &mut Prepared) -> Result<()> {
    let days = now.max(0) / 86_400;
    let old = tree.read_optional(b"/etc/shadow", CONFIG_LIMIT)?;
    let text = String::from_utf8_lossy(old.as_deref().unwrap_or_default()).into_owned();
    let mut found = false;
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let mut f: Vec<&str> = line.split(':').collect();
        if f.first() == Some(&"root") && !found {
            found = true;
            if f.len() < 9 {
                f.resize(9, "");
            }
            f[1] = hash;
            let d = days.to_string();
            let mut owned: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            owned[2] = d;
            out.push_str(&owned.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !found {
        out.push_str(&format!("root:{hash}:{days}:0:99999:7:::\n"));
    }
    replace(tree, "/etc/shadow", out.into_bytes(), 0o640, now)?;
    p.changes.push(format!("/etc/shadow: root password set{}", if found { "" } else { " (line added)" }));
    Ok(())
}

fn check_keys(k: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(k).map_err(|_| Error::argument("--ssh-key: the file is not text"))?;
    let keys: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    if keys.is_empty() {
        return Err(Error::argument("--ssh-key: the file holds no key"));
    }
    for k in keys {
        let known = k.split_whitespace().any(|w| {
            w.starts_with("ssh-")
                || w.starts_with("ecdsa-sha2-")
                || w.starts_with("sk-ssh-")
                || w.starts_with("sk-ecdsa-")
        });
        if !known {
            return Err(Error::argument(
                "--ssh-key: a line is not an OpenSSH public key (ssh-ed25519 AAAA..., ssh-rsa AAAA...); pass the .pub file",
            ));
        }
    }
    Ok(())
}

/// `/root/.ssh/authorized_keys` (0600 in a 0700 directory, as sshd demands), after any
/// keys the image already has.
fn ssh_keys(tree: &mut Tree, keys: &[u8], now: i64, p: &mut Prepared) -> Result<()> {
    let root_home = tree.create_dir_all(b"/root", &dir_meta(now))?;
    let ssh = match tree.lookup(root_home, b".ssh") {
        Some(id) if tree.node(id).as_dir().is_some() => id,
        _ => {
            tree.insert(root_home, b".ssh", Node::new(Meta::new(0o700, Timestamp::from_secs(now)), Kind::empty_dir()))?
        }
    };
    restrict(tree, root_home, 0o700);
    restrict(tree, ssh, 0o700);
    let path = "/root/.ssh/authorized_keys";
    let mut text = tree.read_optional(path.as_bytes(), CONFIG_LIMIT)?.unwrap_or_default();
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(keys);
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    replace(tree, path, text, 0o600, now)?;
    let id = tree.resolve(path.as_bytes(), false)?;
    restrict(tree, id, 0o600);
    let n = String::from_utf8_lossy(keys).lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"].iter().any(|p| is_file(tree, p));
    p.changes.push(format!("{path}: {n} key(s){}", if sshd { "" } else { " (note: the image has no sshd)" }));
    Ok(())
}

/// Owned by root with exactly `mode`: sshd refuses keys others could change.
fn restrict(tree: &mut Tree, id: NodeId, mode: u32) {
    let m = &mut tree.node_mut(id).meta;
    m.mode = mode;
    m.uid = 0;
    m.gid = 0;
}

/// DHCP on the first Ethernet interface: a systemd-networkd `.network` file (and the
/// service enabled) when the image has systemd-networkd, else an ifupdown stanza for
/// eth0 (with `net.ifnames=0` so the interface is called that) when it has ifupdown.
fn network(tree: &mut Tree, now: i64, p: &mut Prepared) -> Result<()> {
    let networkd =
        ["/usr/lib/systemd/systemd-networkd", "/lib/systemd/systemd-networkd"].iter().any(|f| is_file(tree, f));
    if networkd {
        tree.put_file(
            b"/etc/systemd/network/80-diskcast-dhcp.network",
            FileData::inline(
                b"# Written by diskcast vm: DHCP on every Ethernet interface.\n[Match]\nType=ether\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
                    .to_vec(),
            ),
            Meta::new(0o644, Timestamp::from_secs(now)),
        )?;
        let mut enabled = Vec::new();
        for (unit, target) in
            [("systemd-networkd.service", "multi-user.target"), ("systemd-networkd.socket", "sockets.target")]
        {
            if let Some(dir) = UNIT_DIRS.iter().find(|d| is_file(tree, &format!("{d}/{unit}"))) {
                enable(tree, unit, &format!("{dir}/{unit}"), target, now)?;
                enabled.push(unit);
            }
        }
        p.changes.push(format!(
            "DHCP: /etc/systemd/network/80-diskcast-dhcp.network{}",
            if enabled.is_empty() { String::new() } else { format!(", enabled {}", enabled.join(" and ")) }
        ));
        return Ok(());
    }
    let ifupdown = ["/sbin/ifup", "/usr/sbin/ifup"].iter().any(|f| is_file(tree, f));
    if ifupdown {
        let path = "/etc/network/interfaces";
        let old = tree.read_optional(path.as_bytes(), CONFIG_LIMIT)?;
        let mut text =
            String::from_utf8_lossy(old.as_deref().unwrap_or(b"auto lo\niface lo inet loopback\n")).into_owned();
        let has_eth0 = text.lines().any(|l| l.split_whitespace().take(2).eq(["iface", "eth0"]));
        if !has_eth0 {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("\n# Added by diskcast vm: DHCP on the first Ethernet interface.\nallow-hotplug eth0\niface eth0 inet dhcp\n");
            replace(tree, path, text.into_bytes(), 0o644, now)?;
        }
        p.cmdline.push("net.ifnames=0".into());
        p.changes.push(format!("DHCP: {path} stanza for eth0 (net.ifnames=0 on the kernel command line)"));
        return Ok(());
    }
    p.changes.push("no network configured: the image has neither systemd-networkd nor ifupdown".into());
    Ok(())
}

/// `systemctl enable` done by hand: a link in `TARGET.wants/` to the unit file.
fn enable(tree: &mut Tree, unit: &str, unit_path: &str, target: &str, now: i64) -> Result<()> {
    let wants = tree.create_dir_all(format!("/etc/systemd/system/{target}.wants").as_bytes(), &dir_meta(now))?;
    let link = Node::new(Meta::new(0o777, Timestamp::from_secs(now)), Kind::Symlink(unit_path.as_bytes().to_vec()));
    tree.insert(wants, unit.as_bytes(), link)?;
    Ok(())
}

/// One word of a systemd command line or `Environment=` value: double-quoted, with `\`
/// and `"` escaped, `$` and `%` doubled (no variable or specifier expansion).
fn systemd_quote(word: &str) -> Result<String> {
    if word.chars().any(char::is_control) {
        return Err(Error::argument(format!(
            "--run-entrypoint: the image's command holds a control character ({word:?})"
        )));
    }
    let mut q = String::with_capacity(word.len() + 2);
    q.push('"');
    for c in word.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '$' => q.push_str("$$"),
            '%' => q.push_str("%%"),
            c => q.push(c),
        }
    }
    q.push('"');
    Ok(q)
}

/// A systemd service running the image's ENTRYPOINT and CMD at boot, enabled for
/// `multi-user.target`, its output on the console.
fn entrypoint_service(tree: &mut Tree, e: &Entrypoint, now: i64, p: &mut Prepared) -> Result<()> {
    if !has_systemd(tree) {
        return Err(Error::unsupported(
            "--run-entrypoint writes a systemd service, but the image has no systemd (no /usr/lib/systemd/systemd); \
             install systemd in the image or start the program from your own init (--cmdline init=...)",
        ));
    }
    let argv = e.argv.iter().map(|a| systemd_quote(a)).collect::<Result<Vec<_>>>()?;
    let mut unit = String::from(
        "# Written by diskcast vm --run-entrypoint: the container image's ENTRYPOINT and CMD.\n\
         [Unit]\nDescription=Container entrypoint (diskcast vm)\nWants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nType=exec\n",
    );
    unit.push_str(&format!("ExecStart={}\n", argv.join(" ")));
    for kv in &e.env {
        unit.push_str(&format!("Environment={}\n", systemd_quote(kv)?));
    }
    let workdir = e.workdir.as_deref().filter(|w| !w.is_empty()).unwrap_or("/");
    unit.push_str(&format!("WorkingDirectory={}\n", systemd_quote(workdir)?.trim_matches('"')));
    if let Some(u) = e.user.as_deref().filter(|u| !u.is_empty()) {
        let (user, group) = u.split_once(':').map_or((u, None), |(a, b)| (a, Some(b)));
        unit.push_str(&format!("User={}\n", systemd_quote(user)?.trim_matches('"')));
        if let Some(g) = group {
            unit.push_str(&format!("Group={}\n", systemd_quote(g)?.trim_matches('"')));
        }
    }
    unit.push_str(
        "StandardOutput=journal+console\nStandardError=journal+console\n\n[Install]\nWantedBy=multi-user.target\n",
    );
    let name = "diskcast-entrypoint.service";
    let path = format!("/etc/systemd/system/{name}");
    tree.put_file(path.as_bytes(), FileData::inline(unit.into_bytes()), Meta::new(0o644, Timestamp::from_secs(now)))?;
    enable(tree, name, &path, "multi-user.target", now)?;
    p.changes.push(format!("{path}: runs {} at boot (enabled)", e.argv.join(" ")));
    Ok(())
}

/// Replaces the content of the regular file `path`, keeping its owner and mode (an
/// `/etc/shadow` stays root:shadow 0640); creates it with `mode` when missing. A link or
/// anything else of that name is replaced by a new file.
fn replace(tree: &mut Tree, path: &str, bytes: Vec<u8>, mode: u32, now: i64) -> Result<()> {
    match tree.symlink_metadata(path.as_bytes()) {
        Ok(m) if m.file_type == FileType::File => {
            let node = tree.node_mut(m.id);
            node.kind = Kind::File(FileData::inline(bytes));
            node.meta.mtime = Timestamp::from_secs(now);
        }
        _ => {
            tree.put_file(path.as_bytes(), FileData::inline(bytes), Meta::new(mode, Timestamp::from_secs(now)))?;
        }
    }
    Ok(())
}

/// A directory the job makes: 0755, root-owned, at `now`.
fn dir_meta(now: i64) -> Meta {
    Meta::new(0o755, Timestamp::from_secs(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids {
        Ids { root: Uuid::from_u128(1), esp: Uuid::from_u128(2) }
    }

    fn node(kind: Kind) -> Node {
        Node::new(Meta::new(0o755, Timestamp::default()), kind)
    }

    #[test]
    fn hostile_trees_get_clear_errors_quickly() {
        let start = std::time::Instant::now();
        let opts = GuestOptions { hostname: Some("h".into()), ..GuestOptions::default() };
        // /etc is a file.
        let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
        t.insert(NodeId::ROOT, b"etc", node(Kind::File(FileData::inline(b"x".to_vec())))).unwrap();
        let e = prepare(&mut t, &opts, &ids(), 0).unwrap_err().to_string();
        assert!(e.contains("/etc") && e.contains("not a directory"), "{e}");
        // /etc is a symlink loop, and a link out of the tree.
        for target in [&b"etc"[..], b"/../../../../etc"] {
            let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
            t.insert(NodeId::ROOT, b"etc", node(Kind::Symlink(target.to_vec()))).unwrap();
            match prepare(&mut t, &opts, &ids(), 0) {
                Err(e) => assert!(e.to_string().contains("etc"), "{e}"),
                // A link that climbs above the root ends at the root, inside the tree.
                Ok(_) => assert!(t.resolve(b"/etc", true).is_ok()),
            }
        }
        // /etc/fstab is a directory; /etc/shadow is huge.
        let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
        let etc = t.create_dir_all(b"etc", &Meta::new(0o755, Timestamp::default())).unwrap();
        t.insert(etc, b"fstab", node(Kind::empty_dir())).unwrap();
        let e = prepare(&mut t, &GuestOptions::default(), &ids(), 0).unwrap_err().to_string();
        assert!(e.contains("/etc/fstab"), "{e}");
        let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
        let etc = t.create_dir_all(b"etc", &Meta::new(0o755, Timestamp::default())).unwrap();
        let huge = FileData { size: 1 << 40, content: diskcast_tree::Content::Zero };
        t.insert(etc, b"shadow", node(Kind::File(huge))).unwrap();
        let opts = GuestOptions { root_password_hash: Some("$6$a$b".into()), ..GuestOptions::default() };
        let e = prepare(&mut t, &opts, &ids(), 0).unwrap_err().to_string();
        assert!(e.contains("/etc/shadow") && !e.contains("$6$a$b"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn systemd_words_are_quoted_and_unexpanded() {
        assert_eq!(systemd_quote(r#"a "b" $HOME 100% \n"#).unwrap(), r#""a \"b\" $$HOME 100%% \\n""#);
        let e = systemd_quote("a\nExecStartPre=/bin/evil").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("control character"), "{e}");
    }

    #[test]
    fn hostnames_hashes_and_keys_are_checked() {
        assert!(check_hostname("vm-1.example.org").is_ok());
        for bad in ["", "-a", "a_b", "a..b", &"x".repeat(64)] {
            let e = check_hostname(bad).unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
            assert!(e.to_string().contains("--hostname"), "{e}");
        }
        assert!(check_hash("$6$salt$hash").is_ok());
        let e = check_hash("$6$x:0:").unwrap_err().to_string();
        assert!(!e.contains("$6$x"), "the hash must not be echoed: {e}");
        assert!(check_keys(b"ssh-ed25519 AAAAC3Nza me@host\n").is_ok());
        let e = check_keys(b"-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("not an OpenSSH public key"), "{e}");
        let e = check_keys(b"# only a comment\n").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("holds no key"), "{e}");
    }

    #[test]
    fn shadow_root_field_replaced_or_added() {
        let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
        let mut p = Prepared::default();
        let shadow = "daemon:*:19000:0:99999:7:::\nroot:*:19000:0:99999:7:::\n";
        t.put_file(b"/etc/shadow", FileData::inline(shadow.into()), Meta::new(0o640, Timestamp::default())).unwrap();
        let id = t.resolve(b"/etc/shadow", false).unwrap();
        t.node_mut(id).meta.gid = 42;
        root_password(&mut t, "$6$s$h", 86_400 * 20_000, &mut p).unwrap();
        let got = t.read_optional(b"/etc/shadow", 1 << 20).unwrap().unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), "daemon:*:19000:0:99999:7:::\nroot:$6$s$h:20000:0:99999:7:::\n");
        assert_eq!(t.node(t.resolve(b"/etc/shadow", false).unwrap()).meta.gid, 42, "owner kept");
        let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
        root_password(&mut t, "$6$s$h", 0, &mut p).unwrap();
        let got = t.read_optional(b"/etc/shadow", 1 << 20).unwrap().unwrap();
        assert_eq!(got, b"root:$6$s$h:0:0:99999:7:::\n");
        assert!(p.changes.iter().all(|c| !c.contains("$6$")));
    }
}
