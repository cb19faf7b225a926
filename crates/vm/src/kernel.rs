//! Finding the kernel and initramfs a root filesystem carries.
//!
//! Distributions put them in a few known places: `/boot/vmlinuz-VERSION` with
//! `/boot/initrd.img-VERSION` (Debian, Ubuntu) or `/boot/initramfs-VERSION.img` (Fedora,
//! Arch), and `/usr/lib/modules/VERSION/vmlinuz` (Fedora, systemd's kernel-install,
//! Debian's newer layouts), plus the `/vmlinuz` and `/initrd.img` symlinks Debian keeps.
//! When several kernels are installed the newest version wins, as a distribution's own
//! boot loader setup would pick.

use diskcast_tree::{FileData, Kind, NodeId, Tree};
use std::cmp::Ordering;

/// A kernel found in a tree, with its initramfs when one belongs to it.
#[derive(Debug, Clone)]
pub struct FoundKernel {
    /// The kernel release (`6.1.0-27-amd64`), when the file name says it.
    pub version: Option<String>,
    /// Path of the kernel in the tree.
    pub kernel_path: String,
    /// The kernel's bytes (a reference into the tree's source).
    pub kernel: FileData,
    /// Path and bytes of the matching initramfs.
    pub initrd: Option<(String, FileData)>,
    /// The kernel's `modules.builtin`, written beside it on the ESP
    /// ([`crate::ESP_BUILTIN`]) when nothing else on the disk would carry it.
    pub builtin: Option<FileData>,
}

/// The newest kernel in `tree`, or `None` when it has none.
pub fn find_kernel(tree: &Tree) -> Option<FoundKernel> {
    let mut found: Vec<FoundKernel> = Vec::new();
    let mut seen: Vec<NodeId> = Vec::new();
    let mut add = |tree: &Tree, path: String, version: Option<String>| {
        let Some(id) = regular_file(tree, &path) else { return };
        if seen.contains(&id) {
            return;
        }
        seen.push(id);
        let Some(kernel) = tree.node(id).as_file().cloned() else { return };
        let initrd = version.as_deref().and_then(|v| initrd_for(tree, v));
        found.push(FoundKernel { version, kernel_path: path, kernel, initrd, builtin: None });
    };
    for (dir, versioned) in [("/boot", true), ("/usr/lib/modules", false), ("/lib/modules", false)] {
        for name in entry_names(tree, dir) {
            if versioned {
                if let Some(v) = name.strip_prefix("vmlinuz-").filter(|v| !v.is_empty()) {
                    add(tree, format!("{dir}/{name}"), Some(v.to_string()));
                }
            } else {
                add(tree, format!("{dir}/{name}/vmlinuz"), Some(name.clone()));
            }
        }
    }
    // Debian's /vmlinuz -> boot/vmlinuz-VERSION: a target already found is skipped; a
    // plain /vmlinuz file or a link elsewhere is a kernel of its own.
    for link in ["/vmlinuz", "/boot/vmlinuz"] {
        let version = link_target(tree, link).and_then(|t| {
            let name = t.rsplit('/').next().unwrap_or_default().to_string();
            name.strip_prefix("vmlinuz-").map(str::to_string)
        });
        add(tree, link.to_string(), version);
    }
    found.into_iter().max_by(|a, b| compare_versions(a.version.as_deref(), b.version.as_deref())).map(|mut k| {
        if k.initrd.is_none() && k.kernel_path.ends_with("/vmlinuz") && !k.kernel_path.contains("/modules/") {
            // The unversioned /vmlinuz pairs with /initrd.img.
            let dir = &k.kernel_path[..k.kernel_path.len() - "vmlinuz".len()];
            let path = format!("{dir}initrd.img");
            k.initrd = file_at(tree, &path).map(|f| (path, f));
        }
        k
    })
}

/// The initramfs for kernel release `version`.
fn initrd_for(tree: &Tree, version: &str) -> Option<(String, FileData)> {
    [
        format!("/boot/initrd.img-{version}"),
        format!("/boot/initramfs-{version}.img"),
        format!("/boot/initrd-{version}"),
        format!("/usr/lib/modules/{version}/initrd"),
        format!("/usr/lib/modules/{version}/initramfs.img"),
    ]
    .into_iter()
    .find_map(|p| file_at(tree, &p).map(|f| (p, f)))
}

fn file_at(tree: &Tree, path: &str) -> Option<FileData> {
    regular_file(tree, path).and_then(|id| tree.node(id).as_file().cloned())
}

/// The regular file `path` names (following symbolic links inside the tree).
fn regular_file(tree: &Tree, path: &str) -> Option<NodeId> {
    let id = tree.resolve(path.as_bytes(), true).ok()?;
    tree.node(id).as_file().filter(|f| f.size > 0).map(|_| id)
}

fn link_target(tree: &Tree, path: &str) -> Option<String> {
    let id = tree.resolve(path.as_bytes(), false).ok()?;
    match &tree.node(id).kind {
        Kind::Symlink(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    }
}

/// The names in directory `path` (following links), as UTF-8 (kernel releases are).
fn entry_names(tree: &Tree, path: &str) -> Vec<String> {
    let Ok(id) = tree.resolve(path.as_bytes(), true) else { return Vec::new() };
    let Some(dir) = tree.node(id).as_dir() else { return Vec::new() };
    dir.entries().filter_map(|(n, _)| std::str::from_utf8(n).ok().map(str::to_string)).collect()
}

/// Orders kernel releases as version numbers: digit runs compare as numbers, the rest as
/// text, so `6.10.0` is newer than `6.9.12`. A kernel without a version is the oldest.
pub fn compare_versions(a: Option<&str>, b: Option<&str>) -> Ordering {
    let (a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => return a.is_some().cmp(&b.is_some()),
    };
    let (mut x, mut y) = (chunks(a), chunks(b));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u128>(), q.parse::<u128>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// Splits `s` into runs of digits and runs of anything else.
fn chunks(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let digit = first.is_ascii_digit();
        let end = rest.find(|c: char| c.is_ascii_digit() != digit).unwrap_or(rest.len());
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

/// How a found kernel is described in messages.
pub fn describe(k: &FoundKernel) -> String {
    let mut s = format!("kernel {}", k.kernel_path);
    if let Some(v) = &k.version {
        s.push_str(&format!(" ({v})"));
    }
    match &k.initrd {
        Some((p, _)) => s.push_str(&format!(", initramfs {p}")),
        None => s.push_str(", no initramfs"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskcast_tree::{Meta, Node, Timestamp};

    fn tree(files: &[&str], links: &[(&str, &str)]) -> Tree {
        let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
        let m = Meta::new(0o755, Timestamp::default());
        for f in files {
            let (dir, name) = f.rsplit_once('/').unwrap();
            let d = t.create_dir_all(dir.as_bytes(), &m).unwrap();
            t.insert(d, name.as_bytes(), Node::new(m.clone(), Kind::File(FileData::inline(f.as_bytes().to_vec()))))
                .unwrap();
        }
        for (l, target) in links {
            let (dir, name) = l.rsplit_once('/').unwrap();
            let d = t.create_dir_all(dir.as_bytes(), &m).unwrap();
            t.insert(d, name.as_bytes(), Node::new(m.clone(), Kind::Symlink(target.as_bytes().to_vec()))).unwrap();
        }
        t
    }

    #[test]
    fn link_loops_and_links_out_of_the_tree_find_nothing() {
        let t = tree(&[], &[("/vmlinuz", "vmlinuz"), ("/boot", "/boot"), ("/usr/lib/modules", "../../../../..")]);
        assert!(find_kernel(&t).is_none());
        // A link climbing above the root stays in the tree.
        let t = tree(&["/boot/vmlinuz-1"], &[("/vmlinuz", "../../../boot/vmlinuz-1")]);
        assert_eq!(find_kernel(&t).unwrap().kernel_path, "/boot/vmlinuz-1");
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(compare_versions(Some("6.10.0-1-amd64"), Some("6.9.12-1-amd64")), Ordering::Greater);
        assert_eq!(compare_versions(Some("6.1.0-27-amd64"), Some("6.1.0-9-amd64")), Ordering::Greater);
        assert_eq!(compare_versions(None, Some("1")), Ordering::Less);
        assert_eq!(compare_versions(Some("5.4"), Some("5.4")), Ordering::Equal);
    }

    #[test]
    fn newest_boot_kernel_with_its_initrd() {
        let t = tree(
            &[
                "/boot/vmlinuz-6.1.0-9-amd64",
                "/boot/initrd.img-6.1.0-9-amd64",
                "/boot/vmlinuz-6.1.0-27-amd64",
                "/boot/initrd.img-6.1.0-27-amd64",
                "/boot/config-6.1.0-27-amd64",
            ],
            &[("/vmlinuz", "boot/vmlinuz-6.1.0-9-amd64")],
        );
        let k = find_kernel(&t).unwrap();
        assert_eq!(k.kernel_path, "/boot/vmlinuz-6.1.0-27-amd64");
        assert_eq!(k.initrd.unwrap().0, "/boot/initrd.img-6.1.0-27-amd64");
    }

    #[test]
    fn modules_dir_kernels_and_fedora_initramfs() {
        let t = tree(
            &["/usr/lib/modules/6.8.5-301.fc40.x86_64/vmlinuz", "/boot/initramfs-6.8.5-301.fc40.x86_64.img"],
            &[("/lib", "usr/lib")],
        );
        let k = find_kernel(&t).unwrap();
        assert_eq!(k.version.as_deref(), Some("6.8.5-301.fc40.x86_64"));
        assert_eq!(k.initrd.unwrap().0, "/boot/initramfs-6.8.5-301.fc40.x86_64.img");
    }

    #[test]
    fn plain_vmlinuz_pairs_with_initrd_img_and_nothing_is_none() {
        let t = tree(&["/vmlinuz", "/initrd.img"], &[]);
        let k = find_kernel(&t).unwrap();
        assert_eq!((k.kernel_path.as_str(), k.initrd.unwrap().0.as_str()), ("/vmlinuz", "/initrd.img"));
        assert!(find_kernel(&tree(&["/bin/sh", "/boot/config-1"], &[("/vmlinuz", "boot/missing")])).is_none());
    }
}
