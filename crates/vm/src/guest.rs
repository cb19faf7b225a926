//! Making a container's root filesystem boot as a VM: the files a VM needs that a
//! container never has (fstab, hostname, a first-boot machine id, a way in, a network
//! configuration, a service for the image's entrypoint).
//!
//! Every change is made on the [`Tree`] (new inline files, replaced content): the
//! source image is never touched. Each change is reported as one line, and secrets (the
//! password hash) never appear in those lines.

use diskcast_block::{Error, Result};
use diskcast_part::{PartType, Uuid};
use diskcast_tree::{FileData, FileType, Kind, Meta, Node, NodeId, Timestamp, Tree};

/// The largest configuration file of the image read for editing (`/etc/shadow`,
/// `/etc/fstab`, `/etc/network/interfaces`, `/etc/hosts`).
const CONFIG_LIMIT: u64 = 4 << 20;
/// The largest `--ssh-key` file.
pub const SSH_KEYS_LIMIT: u64 = 1 << 20;
/// The largest `--cloud-init`, `--meta-data` or `--network-config` file: cloud-init reads
/// them whole into memory; 16 MiB is far above what platforms accept as user data (EC2:
/// 16 KiB, Azure: 64 KiB, OpenStack: 64 KiB).
pub const CLOUD_INIT_LIMIT: u64 = 16 << 20;
/// Where cloud-init's NoCloud datasource reads a seed from the root filesystem.
pub const NOCLOUD_SEED: &str = "/var/lib/cloud/seed/nocloud";

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
    /// A cloud-init NoCloud seed.
    pub cloud_init: Option<CloudInit>,
}

/// The files of a cloud-init NoCloud seed (`--cloud-init`, `--meta-data`,
/// `--network-config`).
#[derive(Debug, Clone, Default)]
pub struct CloudInit {
    /// `user-data`: cloud-config, a script, a MIME multipart message, ...
    pub user_data: Vec<u8>,
    /// `meta-data` (YAML); diskcast writes one with an `instance-id` when `None`.
    pub meta_data: Option<Vec<u8>>,
    /// `network-config` (netplan-style version 1 or 2 YAML).
    pub network_config: Option<Vec<u8>>,
}

/// The partitions the guest mounts.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// The root partition's unique GUID.
    pub root: Uuid,
    /// The ESP's unique GUID.
    pub esp: Uuid,
    /// The root partition's type (the architecture's Discoverable Partitions root type),
    /// which the repart.d file matches.
    pub root_type: PartType,
}

/// What [`prepare`] did.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// One line per change.
    pub changes: Vec<String>,
    /// Kernel arguments the changes rely on (`net.ifnames=0` for an ifupdown stanza
    /// naming eth0).
    pub cmdline: Vec<String>,
    /// How the root partition and filesystem grow to the disk on first boot:
    /// `systemd-repart`, or `none (why)`.
    pub first_boot_growth: String,
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
    if let Some(c) = &opts.cloud_init {
        check_cloud_init(c)?;
    }
    Ok(())
}

/// Applies everything to `tree`.
pub fn prepare(tree: &mut Tree, opts: &GuestOptions, ids: &Ids, now: i64) -> Result<Prepared> {
    validate(opts)?;
    let mut p = Prepared::default();
    let grow = growth(tree, ids.root_type, now, &mut p)?;
    fstab(tree, ids, grow, now, &mut p)?;
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
    if let Some(c) = &opts.cloud_init {
        nocloud_seed(tree, c, opts.hostname.as_deref(), ids, now, &mut p)?;
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

/// `/etc/fstab`: root by PARTUUID (with `x-systemd.growfs` when `grow`), the ESP at
/// `/boot/efi` (or `/efi` when the image has that directory and no `/boot/efi`). Lines of
/// an existing fstab that mount anything else are kept.
fn fstab(tree: &mut Tree, ids: &Ids, grow: bool, now: i64, p: &mut Prepared) -> Result<()> {
    let efi = if tree.exists(b"/efi") && !tree.exists(b"/boot/efi") { "/efi" } else { "/boot/efi" };
    tree.create_dir_all(efi.as_bytes(), &dir_meta(now))?;
    let root_opts = if grow { "rw,relatime,x-systemd.growfs" } else { "rw,relatime" };
    let mut text = format!(
        "# Written by diskcast vm: this disk's root and EFI System partitions.\n\
         PARTUUID={}\t/\text4\t{root_opts}\t0\t1\n\
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

/// The systemd release that introduced systemd-repart (and its `repart.d` files); the
/// fstab option `x-systemd.growfs` is older (236).
const REPART_MIN_VERSION: u32 = 245;
/// Where systemd-repart is installed (`/bin` on Debian 12, `/usr/bin` elsewhere).
const REPART: [&str; 2] = ["/usr/bin/systemd-repart", "/bin/systemd-repart"];
/// Where systemd-growfs (run by the `x-systemd.growfs` fstab option) is installed.
const GROWFS: [&str; 2] = ["/usr/lib/systemd/systemd-growfs", "/lib/systemd/systemd-growfs"];
/// Directories holding systemd's private library, named after its release
/// (`libsystemd-shared-252.so`).
const SYSTEMD_LIB_DIRS: [&str; 4] =
    ["/usr/lib/systemd", "/lib/systemd", "/usr/lib64/systemd", "/usr/lib/x86_64-linux-gnu/systemd"];
/// The repart.d file diskcast writes.
pub const REPART_CONF: &str = "/etc/repart.d/50-diskcast-root.conf";
/// Where systemd-repart reads definitions on a booted system.
const REPART_DIRS: [&str; 3] = ["/etc/repart.d", "/usr/local/lib/repart.d", "/usr/lib/repart.d"];

/// systemd's release in the image, from the name of its private library.
fn systemd_version(tree: &Tree) -> Option<u32> {
    SYSTEMD_LIB_DIRS.iter().find_map(|d| {
        let id = tree.resolve(d.as_bytes(), true).ok()?;
        tree.node(id).as_dir()?.entries().find_map(|(name, _)| {
            let v = name.strip_prefix(b"libsystemd-shared-")?;
            let digits: Vec<u8> = v.iter().copied().take_while(u8::is_ascii_digit).collect();
            std::str::from_utf8(&digits).ok()?.parse().ok()
        })
    })
}

/// First-boot growth: with systemd >= 245 (systemd-repart, systemd-growfs), a repart.d
/// file that matches the root partition by its type (repart then grows it, the last
/// partition, into the free space at the end of the disk, and moves the backup GPT
/// there) and `x-systemd.growfs` on `/` in fstab (systemd-growfs then grows the mounted
/// ext4 to the partition). repart.d's own `GrowFileSystem=` acts only on partitions
/// mounted by systemd-gpt-auto-generator, not on fstab mounts. Returns whether fstab
/// gets the option; anything else is `none` with the reason, in the summary.
fn growth(tree: &mut Tree, root_type: PartType, now: i64, p: &mut Prepared) -> Result<bool> {
    let none = |p: &mut Prepared, why: String| {
        p.first_boot_growth = format!("none ({why})");
        Ok(false)
    };
    if !has_systemd(tree) {
        return none(p, "the image has no systemd, so no systemd-repart or systemd-growfs to grow the root".into());
    }
    let version = systemd_version(tree);
    if let Some(v) = version.filter(|v| *v < REPART_MIN_VERSION) {
        return none(p, format!("systemd {v} is older than {REPART_MIN_VERSION}, which brought systemd-repart"));
    }
    let Some(repart) = REPART.iter().find(|f| is_file(tree, f)) else {
        return none(p, "the image has no systemd-repart (Debian 12: package systemd; later: systemd-repart)".into());
    };
    let unit = "systemd-repart.service";
    let Some(dir) = UNIT_DIRS.iter().find(|d| is_file(tree, &format!("{d}/{unit}"))) else {
        return none(p, format!("the image has {repart} but no {unit}"));
    };
    if !GROWFS.iter().any(|f| is_file(tree, f)) {
        return none(p, "the image has no systemd-growfs to grow the mounted ext4".into());
    }
    // Debian and upstream install the unit into sysinit.target.wants; enable it where a
    // distribution did not.
    let wanted = UNIT_DIRS
        .iter()
        .chain(["/etc/systemd/system"].iter())
        .any(|d| tree.symlink_metadata(format!("{d}/sysinit.target.wants/{unit}").as_bytes()).is_ok());
    if !wanted {
        enable(tree, unit, &format!("{dir}/{unit}"), "sysinit.target", now)?;
    }
    // An image with repart.d definitions of its own (mkosi-built ones) has its layout
    // described already: a second root definition would make repart add a partition.
    let own: Vec<String> = REPART_DIRS
        .iter()
        .filter_map(|d| {
            let id = tree.resolve(d.as_bytes(), true).ok()?;
            let confs = tree.node(id).as_dir()?.entries().filter(|(n, _)| n.ends_with(b".conf")).count();
            (confs > 0).then(|| format!("{d} ({confs} files)"))
        })
        .collect();
    let v = version.map_or_else(|| "systemd (release unknown)".to_string(), |v| format!("systemd {v}"));
    p.first_boot_growth = "systemd-repart".into();
    if !own.is_empty() {
        p.changes.push(format!(
            "first-boot growth: the image's own repart.d definitions in {} (no diskcast file), x-systemd.growfs on / ({v})",
            own.join(", ")
        ));
        return Ok(true);
    }
    // repart.d(5)'s type names are the Discoverable Partitions' short names
    // (root-x86-64, root-arm64), as diskcast_part names them.
    let ty = root_type.name();
    tree.put_file(
        REPART_CONF.as_bytes(),
        FileData::inline(
            format!(
                "# Written by diskcast vm: systemd-repart grows the root partition (the last one) into\n\
                 # the free space at the end of the disk on boot; x-systemd.growfs in /etc/fstab grows\n\
                 # its ext4.\n[Partition]\nType={ty}\n"
            )
            .into_bytes(),
        ),
        Meta::new(0o644, Timestamp::from_secs(now)),
    )?;
    p.changes.push(format!(
        "first-boot growth: {REPART_CONF} ({ty}) for systemd-repart{} and x-systemd.growfs on / ({v})",
        if wanted { "" } else { ", enabled" }
    ));
    Ok(true)
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

/// How a user-data file may begin, as cloud-init's `handlers.INCLUSION_TYPES_MAP` tells
/// its parts apart (`#cloud-config` also covers `-archive` and `-jsonp`). Anything else
/// cloud-init takes as plain text and ignores with a warning.
const USER_DATA_STARTS: [&str; 7] =
    ["#cloud-config", "#!", "#include", "#cloud-boothook", "#part-handler", "## template: jinja", "#upstart-job"];
/// cloud-init looks for a MIME header in this many first bytes.
const MIME_WINDOW: usize = 4096;

fn check_cloud_init(c: &CloudInit) -> Result<()> {
    let u = &c.user_data;
    let gzip = u.starts_with(&[0x1f, 0x8b]);
    let head = &u[..u.len().min(MIME_WINDOW)];
    let mime = head.windows(13).any(|w| w.eq_ignore_ascii_case(b"mime-version:"));
    let known = USER_DATA_STARTS.iter().any(|s| u.starts_with(s.as_bytes()));
    if !(gzip || mime || known) {
        return Err(Error::argument(
            "--cloud-init: the user data does not start as cloud-init expects (#cloud-config, #!, #include, \
             #cloud-boothook, #part-handler, ## template: jinja, a MIME multipart message or gzip); \
             cloud-init would ignore it. Add a `#cloud-config` first line to a YAML config",
        ));
    }
    for (what, data) in [("--meta-data", &c.meta_data), ("--network-config", &c.network_config)] {
        if let Some(d) = data
            && std::str::from_utf8(d).is_err()
        {
            return Err(Error::argument(format!("{what}: the file is not UTF-8 text (cloud-init reads it as YAML)")));
        }
    }
    Ok(())
}

/// Where cloud-init's entry point and its systemd units (or OpenRC script) are.
const CLOUD_INIT_BIN: [&str; 2] = ["/usr/bin/cloud-init", "/bin/cloud-init"];
const CLOUD_INIT_UNITS: [&str; 3] = ["cloud-init-local.service", "cloud-init.service", "cloud-init-main.service"];

/// A NoCloud seed in the root filesystem (`/var/lib/cloud/seed/nocloud/`: `user-data`
/// 0600, `meta-data`, optional `network-config`). Without `--meta-data`, one with an
/// `instance-id` from the root partition's GUID (new for each disk, reproducible under
/// SOURCE_DATE_EPOCH) and `--hostname` as `local-hostname`. An image without cloud-init
/// is refused: the seed would be read by nothing.
fn nocloud_seed(
    tree: &mut Tree,
    c: &CloudInit,
    hostname: Option<&str>,
    ids: &Ids,
    now: i64,
    p: &mut Prepared,
) -> Result<()> {
    let Some(bin) = CLOUD_INIT_BIN.iter().find(|f| is_file(tree, f)) else {
        return Err(Error::unsupported(
            "--cloud-init: the image has no cloud-init (/usr/bin/cloud-init), so nothing would read the seed; \
             install cloud-init in the image, or drop --cloud-init and use --hostname, --ssh-key, --root-password-hash",
        ));
    };
    let units = CLOUD_INIT_UNITS.iter().any(|u| UNIT_DIRS.iter().any(|d| is_file(tree, &format!("{d}/{u}"))))
        || is_file(tree, "/etc/init.d/cloud-init");
    if !units {
        return Err(Error::unsupported(format!(
            "--cloud-init: the image has {bin} but no service starts it (no cloud-init-local.service, \
             cloud-init.service or /etc/init.d/cloud-init)"
        )));
    }
    let generated = c.meta_data.is_none();
    let meta = match &c.meta_data {
        Some(m) => m.clone(),
        None => {
            let mut m = format!("instance-id: iid-diskcast-{}\n", ids.root);
            if let Some(h) = hostname {
                m.push_str(&format!("local-hostname: {h}\n"));
            }
            m.into_bytes()
        }
    };
    let mtime = Timestamp::from_secs(now);
    tree.create_dir_all(NOCLOUD_SEED.as_bytes(), &dir_meta(now))?;
    let mut files = vec![("user-data", c.user_data.clone(), 0o600), ("meta-data", meta, 0o644)];
    if let Some(n) = &c.network_config {
        files.push(("network-config", n.clone(), 0o644));
    }
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();
    let replaced: Vec<&str> =
        names.iter().copied().filter(|n| tree.exists(format!("{NOCLOUD_SEED}/{n}").as_bytes())).collect();
    for (name, bytes, mode) in files {
        tree.put_file(format!("{NOCLOUD_SEED}/{name}").as_bytes(), FileData::inline(bytes), Meta::new(mode, mtime))?;
    }
    let disabled = is_file(tree, "/etc/cloud/cloud-init.disabled");
    p.changes.push(format!(
        "{NOCLOUD_SEED}/: cloud-init NoCloud seed ({}{}){}{}",
        names.join(", "),
        if generated { format!("; instance-id iid-diskcast-{}", ids.root) } else { String::new() },
        if replaced.is_empty() { String::new() } else { format!(", replacing the image's {}", replaced.join(", ")) },
        if disabled { " (note: /etc/cloud/cloud-init.disabled is present: cloud-init will not run)" } else { "" }
    ));
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
        Ids { root: Uuid::from_u128(1), esp: Uuid::from_u128(2), root_type: PartType::RootX86_64 }
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

    fn file(t: &mut Tree, path: &str) {
        t.put_file(path.as_bytes(), FileData::inline(b"x".to_vec()), Meta::new(0o755, Timestamp::default())).unwrap();
    }

    fn read(t: &Tree, path: &str) -> String {
        String::from_utf8(t.read_optional(path.as_bytes(), 1 << 20).unwrap().unwrap_or_default()).unwrap()
    }

    #[test]
    fn growth_needs_systemd_245_with_repart_and_growfs() {
        let growth_of = |files: &[&str]| {
            let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
            for f in files {
                file(&mut t, f);
            }
            let p = prepare(&mut t, &GuestOptions::default(), &ids(), 0).unwrap();
            (p.first_boot_growth, read(&t, "/etc/fstab"), t)
        };
        let (g, fstab, _) = growth_of(&[]);
        assert!(g.starts_with("none (the image has no systemd"), "{g}");
        assert!(!fstab.contains("growfs"), "{fstab}");
        let systemd = ["/usr/lib/systemd/systemd", "/usr/lib/systemd/libsystemd-shared-244.so"];
        let (g, _, _) = growth_of(&systemd);
        assert!(g.contains("systemd 244 is older than 245"), "{g}");
        let systemd = ["/usr/lib/systemd/systemd", "/usr/lib/systemd/libsystemd-shared-255.so"];
        let (g, _, _) = growth_of(&systemd);
        assert!(g.contains("no systemd-repart"), "{g}");
        let mut full = systemd.to_vec();
        full.extend(["/usr/bin/systemd-repart", "/usr/lib/systemd/system/systemd-repart.service"]);
        let (g, _, _) = growth_of(&full);
        assert!(g.contains("no systemd-growfs"), "{g}");
        full.push("/usr/lib/systemd/systemd-growfs");
        let (g, fstab, t) = growth_of(&full);
        assert_eq!(g, "systemd-repart");
        assert!(fstab.contains("\t/\text4\trw,relatime,x-systemd.growfs\t0\t1\n"), "{fstab}");
        assert!(read(&t, REPART_CONF).contains("[Partition]\nType=root-x86-64\n"));
        let mut own = full.clone();
        own.push("/usr/lib/repart.d/10-root.conf");
        let (g, fstab, t) = growth_of(&own);
        assert_eq!(g, "systemd-repart");
        assert!(fstab.contains("x-systemd.growfs") && !t.exists(REPART_CONF.as_bytes()), "{fstab}");
        // Not linked by the distribution: enabled as systemctl would.
        let link = t.symlink_metadata(b"/etc/systemd/system/sysinit.target.wants/systemd-repart.service").unwrap();
        assert_eq!(link.file_type, FileType::Symlink);
    }

    #[test]
    fn user_data_must_start_as_cloud_init_expects() {
        let ci = |u: &[u8]| CloudInit { user_data: u.to_vec(), ..CloudInit::default() };
        for ok in [
            &b"#cloud-config\nruncmd: []\n"[..],
            b"#!/bin/sh\necho hi\n",
            b"#include\nhttps://example.org/ud\n",
            b"## template: jinja\n#cloud-config\n",
            b"Content-Type: multipart/mixed; boundary=\"b\"\nMIME-Version: 1.0\n\n--b--\n",
            b"\x1f\x8b\x08\x00",
        ] {
            check_cloud_init(&ci(ok)).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [&b""[..], b"hostname: x\n", b" #cloud-config\n"] {
            let e = check_cloud_init(&ci(bad)).unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
            assert!(e.to_string().contains("#cloud-config"), "{e}");
        }
        let e = check_cloud_init(&CloudInit { meta_data: Some(vec![0xff, 0xfe]), ..ci(b"#!/bin/sh\n") }).unwrap_err();
        assert!(e.to_string().contains("--meta-data: the file is not UTF-8"), "{e}");
        // Without cloud-init in the image: refused, nothing written.
        let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
        let opts = GuestOptions { cloud_init: Some(ci(b"#cloud-config\n")), ..GuestOptions::default() };
        let e = prepare(&mut t, &opts, &ids(), 0).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Unsupported, "{e}");
        assert!(!t.exists(NOCLOUD_SEED.as_bytes()));
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
