//! An isolinux/syslinux configuration turned into a GRUB menu, so the BIOS side of a
//! fat32 stick boots the ISO's own entries with GRUB.
//!
//! GRUB's own `syslinux_configfile` (2.06) gives up on a whole configuration when it
//! meets a line it does not take (`PROMPT 0`, as Debian's has), leaving an empty menu;
//! this reads what matters for Linux entries and passes over the rest:
//! `LABEL`, `MENU LABEL`, `KERNEL`/`LINUX`, `INITRD`, `APPEND` (its `initrd=` too),
//! `DEFAULT`, `MENU DEFAULT`, `TIMEOUT`, `PROMPT`, `UI`, `INCLUDE`/`MENU INCLUDE` and
//! `CONFIG` (syslinux's documented keywords; paths relative to the configuration's
//! directory, as isolinux resolves them; `CONFIG` inside an entry is that entry's
//! action, left out like a COM32 one). Entries that start COM32 modules, boot
//! sectors or other loaders (`.c32`, `.com`, `.bin`, `.0`) are left out: GRUB cannot run
//! them.

use diskcast_block::{Error, Result};
use diskcast_bootloader::grub_bios::quote;
use diskcast_tree::Tree;

/// Largest configuration file read (real ones are a few KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most files read through `INCLUDE` and `CONFIG` (Debian's menu is about 20).
const MAX_CONFIG_FILES: usize = 64;
/// Most menu entries kept.
const MAX_ENTRIES: usize = 256;
/// Deepest `MENU BEGIN` nesting followed (Debian's is 2).
const MAX_MENU_DEPTH: usize = 16;

/// One Linux entry of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The `LABEL` name.
    pub label: String,
    /// `MENU LABEL`, else the label.
    pub title: Option<String>,
    /// Absolute path of the kernel.
    pub kernel: String,
    /// Absolute paths of the initramfs images.
    pub initrd: Vec<String>,
    /// The command line (`APPEND`).
    pub append: String,
    /// Not a Linux kernel (a COM32 module, a boot sector): left out of the menu.
    pub other: bool,
}

/// The configuration as GRUB needs it.
#[derive(Debug, Default)]
pub struct Config {
    /// Linux entries, in order.
    pub entries: Vec<Entry>,
    /// The label booted without input.
    pub default: Option<String>,
    /// Seconds before the default boots; `None` waits.
    pub timeout: Option<u64>,
    /// Entries left out (COM32 modules...), by label.
    pub skipped: Vec<String>,
}

/// Reads the configuration at `path` of `tree` (and what it includes, at the point it
/// includes it, as isolinux does: an `INCLUDE` inside a `MENU BEGIN` block belongs to
/// that submenu).
///
/// Entries of submenus (`MENU BEGIN` ... `MENU END`) are kept, titled
/// `Submenu > Entry`; their `DEFAULT` and `MENU DEFAULT` are the submenu's own and do not
/// choose what the top menu boots (Debian's dark-contrast submenu has `default
/// installdark`; isolinux still boots the top menu's first entry).
pub fn read(tree: &Tree, path: &str) -> Result<Config> {
    let mut cfg = Config::default();
    let mut prompt: Option<bool> = None;
    let mut ui = false;
    let mut raw_timeout: Option<u64> = None;
    // An APPEND before the first LABEL applies to the entries without their own.
    let mut global_append: Option<String> = None;
    let mut files = 0usize;
    let mut cur: Option<Entry> = None;
    // The open submenus' titles, innermost last.
    let mut menus: Vec<String> = Vec::new();
    let dir = path.rsplit_once('/').map_or("/", |(d, _)| d).to_string();
    // Files being read, innermost (the latest INCLUDE) last: their lines and the next one.
    let mut stack: Vec<(Vec<String>, usize)> = Vec::new();
    let mut next_file = Some(path.to_string());
    loop {
        if let Some(file) = next_file.take() {
            files += 1;
            if files > MAX_CONFIG_FILES {
                return Err(Error::refused(format!(
                    "{path}: includes more than {MAX_CONFIG_FILES} files (INCLUDE/CONFIG loop?)"
                )));
            }
            match tree.read(file.as_bytes(), MAX_CONFIG_BYTES) {
                Ok(t) => stack.push((String::from_utf8_lossy(&t).lines().map(str::to_string).collect(), 0)),
                // isolinux skips an INCLUDE it cannot open; so does the menu.
                Err(_) if file != path => {}
                Err(e) => return Err(Error::invalid(format!("{path}: {}", e.message()))),
            }
        }
        let Some((lines, at)) = stack.last_mut() else { break };
        let Some(line) = lines.get(*at).cloned() else {
            stack.pop();
            continue;
        };
        *at += 1;
        let line = line.trim();
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let word = word.to_ascii_lowercase();
        let (word, rest) = match (word.as_str(), rest.split_once(char::is_whitespace)) {
            ("menu", Some((w, r))) => (format!("menu {}", w.to_ascii_lowercase()), r.trim()),
            ("menu", None) => (format!("menu {}", rest.to_ascii_lowercase()), ""),
            _ => (word, rest),
        };
        let in_submenu = !menus.is_empty();
        match word.as_str() {
            "label" => {
                if let Some(e) = cur.take() {
                    push(&mut cfg, e, &menus)?;
                }
                cur = Some(Entry { label: rest.to_string(), ..Entry::default() });
            }
            "menu begin" | "menu end" => {
                if let Some(e) = cur.take() {
                    push(&mut cfg, e, &menus)?;
                }
                if word == "menu begin" {
                    if menus.len() >= MAX_MENU_DEPTH {
                        return Err(Error::refused(format!(
                            "{path}: submenus nest deeper than {MAX_MENU_DEPTH} (MENU BEGIN without MENU END?)"
                        )));
                    }
                    menus.push(rest.to_string());
                } else {
                    menus.pop();
                }
            }
            "menu label" => match cur.as_mut() {
                Some(e) => e.title = Some(rest.replace('^', "")),
                // A submenu's own label, before its first entry.
                None => {
                    if let Some(m) = menus.last_mut() {
                        *m = rest.replace('^', "");
                    }
                }
            },
            "kernel" | "linux" => {
                if let Some(e) = cur.as_mut() {
                    e.kernel = absolute(&dir, rest);
                    let l = rest.to_ascii_lowercase();
                    e.other = word == "kernel"
                        && [".c32", ".com", ".cbt", ".bin", ".bs", ".bss", ".0"].iter().any(|x| l.ends_with(x));
                }
            }
            "com32" | "boot" | "bss" | "pxe" | "fdimage" | "comboot" | "localboot" => {
                if let Some(e) = cur.as_mut() {
                    e.other = true;
                }
            }
            // Inside an entry, CONFIG is what the entry does (Debian's Help entry loads
            // prompt.cfg, which includes menu.cfg again): not a Linux entry, and
            // nothing to read now.
            "config" if cur.is_some() => {
                if let Some(e) = cur.as_mut() {
                    e.other = true;
                }
            }
            "initrd" => {
                if let Some(e) = cur.as_mut() {
                    e.initrd = rest.split(',').filter(|s| !s.is_empty()).map(|s| absolute(&dir, s)).collect();
                }
            }
            "append" if cur.is_none() => global_append = Some(rest.to_string()),
            "append" => {
                if let Some(e) = cur.as_mut() {
                    e.append = rest.to_string();
                    for w in rest.split_whitespace() {
                        if let Some(list) = w.strip_prefix("initrd=") {
                            e.initrd = list.split(',').filter(|s| !s.is_empty()).map(|s| absolute(&dir, s)).collect();
                        }
                    }
                }
            }
            "default" if in_submenu => {}
            "default" => {
                if !rest.to_ascii_lowercase().ends_with(".c32") {
                    cfg.default = rest.split_whitespace().next().map(str::to_string);
                } else {
                    ui = true;
                }
            }
            "menu default" if in_submenu => {}
            "menu default" => {
                if let Some(e) = &cur {
                    cfg.default = Some(e.label.clone());
                }
            }
            "ui" => ui = true,
            "prompt" => prompt = Some(rest != "0"),
            "timeout" => raw_timeout = rest.parse().ok(),
            "include" | "menu include" | "config" => {
                let f = rest.split_whitespace().next().unwrap_or("");
                if !f.is_empty() {
                    next_file = Some(absolute(&dir, f));
                }
            }
            _ => {}
        }
    }
    if let Some(e) = cur.take() {
        push(&mut cfg, e, &menus)?;
    }
    if let Some(g) = &global_append {
        for e in cfg.entries.iter_mut().filter(|e| e.append.is_empty()) {
            e.append = g.clone();
        }
    }
    // TIMEOUT counts tenths; 0 waits for a choice, unless there is no prompt or menu.
    cfg.timeout = match raw_timeout {
        Some(t) if t > 0 => Some(t.div_ceil(10)),
        _ if !ui && prompt != Some(true) => Some(0),
        _ => None,
    };
    Ok(cfg)
}

/// Closes entry `e`, read inside the submenus `menus` (outermost first): its title is
/// prefixed with theirs.
fn push(cfg: &mut Config, mut e: Entry, menus: &[String]) -> Result<()> {
    if !menus.is_empty() {
        let own = e.title.take().unwrap_or_else(|| e.label.clone());
        e.title = Some(format!("{} > {own}", menus.join(" > ")));
    }
    if e.other || e.kernel.is_empty() {
        cfg.skipped.push(e.label);
        return Ok(());
    }
    if cfg.entries.len() >= MAX_ENTRIES {
        return Err(Error::refused(format!("the isolinux configuration has more than {MAX_ENTRIES} entries")));
    }
    cfg.entries.push(e);
    Ok(())
}

/// `p` as an absolute path: isolinux resolves relative names in the configuration's
/// directory.
fn absolute(dir: &str, p: &str) -> String {
    if p.starts_with('/') { p.to_string() } else { format!("{}/{p}", dir.trim_end_matches('/')) }
}

/// The GRUB menu for `cfg`.
pub fn grub_menu(cfg: &Config) -> Result<String> {
    let mut out = String::new();
    if let Some(t) = cfg.timeout {
        out.push_str(&format!("set timeout={t}\n"));
    }
    if let Some(d) = cfg.default.as_deref().filter(|d| cfg.entries.iter().any(|e| e.label == *d)) {
        out.push_str(&format!("set default={}\n", quote(d)?));
    }
    for e in &cfg.entries {
        let title = e.title.clone().unwrap_or_else(|| e.label.clone());
        out.push_str(&format!("menuentry {} --id {} {{\n", quote(&title)?, quote(&e.label)?));
        let mut linux = format!("  linux {}", quote(&e.kernel)?);
        for w in e.append.split_whitespace() {
            linux.push(' ');
            linux.push_str(&quote(w)?);
        }
        out.push_str(&linux);
        out.push('\n');
        if !e.initrd.is_empty() {
            let list: Vec<String> = e.initrd.iter().map(|i| quote(i)).collect::<Result<_>>()?;
            out.push_str(&format!("  initrd {}\n", list.join(" ")));
        }
        out.push_str("}\n");
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use diskcast_tree::{FileData, Meta, Timestamp};

    /// A tree holding `files` (path, content): the ISO trees of this crate's tests.
    pub(crate) fn tree(files: &[(&str, &str)]) -> Tree {
        let m = Meta::new(0o644, Timestamp::from_secs(0));
        let mut t = Tree::new(m.clone());
        for (p, c) in files {
            t.put_file(p.as_bytes(), FileData::inline(c.as_bytes().to_vec()), m.clone()).unwrap();
        }
        t
    }

    #[test]
    fn debian_like_menus_become_grub_entries() {
        let t = tree(&[
            ("isolinux/isolinux.cfg", "path \ninclude menu.cfg\ndefault vesamenu.c32\nprompt 0\ntimeout 0\n"),
            ("isolinux/menu.cfg", "menu hshift 4\ninclude txt.cfg\nlabel help\n  kernel vesamenu.c32\n"),
            (
                "isolinux/txt.cfg",
                "default install\nlabel install\n\tmenu label ^Install\n\tkernel /install.amd/vmlinuz\n\tappend vga=788 initrd=/install.amd/initrd.gz --- quiet\n",
            ),
        ]);
        let c = read(&t, "/isolinux/isolinux.cfg").unwrap();
        assert_eq!(c.entries.len(), 1);
        let e = &c.entries[0];
        assert_eq!((e.label.as_str(), e.title.as_deref()), ("install", Some("Install")));
        assert_eq!(e.kernel, "/install.amd/vmlinuz");
        assert_eq!(e.initrd, ["/install.amd/initrd.gz"]);
        assert_eq!(c.default.as_deref(), Some("install"));
        assert_eq!(c.timeout, None, "a UI menu with TIMEOUT 0 waits");
        assert_eq!(c.skipped, ["help"]);
        let g = grub_menu(&c).unwrap();
        assert!(g.contains("set default='install'\nmenuentry 'Install' --id 'install' {\n"), "{g}");
        assert!(g.contains("  linux '/install.amd/vmlinuz' 'vga=788' 'initrd=/install.amd/initrd.gz' '---' 'quiet'\n  initrd '/install.amd/initrd.gz'\n}"), "{g}");
    }

    #[test]
    fn relative_paths_initrd_lines_and_no_prompt() {
        let t = tree(&[(
            "boot/isolinux/isolinux.cfg",
            "SERIAL 0 115200\nAPPEND quiet\nDEFAULT live\nPROMPT 0\nTIMEOUT 0\nLABEL live\n  KERNEL vmlinuz\n  INITRD initrd.img,extra.img\n  APPEND boot=live\nLABEL plain\n  LINUX /vmlinuz\n",
        )]);
        let c = read(&t, "/boot/isolinux/isolinux.cfg").unwrap();
        assert_eq!(c.entries[0].kernel, "/boot/isolinux/vmlinuz");
        assert_eq!(c.entries[0].initrd, ["/boot/isolinux/initrd.img", "/boot/isolinux/extra.img"]);
        assert_eq!(c.timeout, Some(0), "PROMPT 0 without a menu boots the default at once");
        assert_eq!((c.entries[0].append.as_str(), c.entries[1].append.as_str()), ("boot=live", "quiet"));
    }

    /// Debian's netinst menu (its files as debian-installer-12-netboot-amd64 has them,
    /// shortened): the Help entry's `config prompt.cfg` loads a file that includes
    /// menu.cfg again (read as an include, that loops to the cap); the dark-contrast
    /// submenu's `default installdark` is the submenu's (isolinux boots the top menu's
    /// first entry); included files are read where they are included.
    #[test]
    fn debians_netinst_menu_keeps_its_top_default_and_reads_no_entry_action() {
        let t = tree(&[
            ("isolinux/isolinux.cfg", "path \ninclude menu.cfg\ndefault vesamenu.c32\nprompt 0\ntimeout 0\n"),
            (
                "isolinux/menu.cfg",
                "menu title Debian GNU/Linux installer menu (BIOS mode)\ninclude txt.cfg\nmenu begin dark\n    menu label Accessible ^dark contrast installer menu\n\tlabel mainmenu\n\t\tmenu label ^Back..\n\t\tmenu exit\n\tinclude drk.cfg\nmenu end\nlabel help\n\tmenu label ^Help\n\ttext help\n   Display help screens\n\tendtext\n\tconfig prompt.cfg\ninclude spk.cfg\n",
            ),
            ("isolinux/prompt.cfg", "prompt 1\ndisplay f1.txt\ntimeout 0\ninclude menu.cfg\n"),
            (
                "isolinux/txt.cfg",
                "label install\n\tmenu label ^Install\n\tkernel /install.amd/vmlinuz\n\tappend initrd=/install.amd/initrd.gz\n",
            ),
            (
                "isolinux/drk.cfg",
                "label installdark\ndefault installdark\n\tmenu label ^Install\n\tmenu default\n\tkernel /install.amd/vmlinuz\n\tappend theme=dark\n",
            ),
            (
                "isolinux/spk.cfg",
                "label installspk\n\tmenu label Install with ^speech synthesis\n\tkernel /install.amd/vmlinuz\n",
            ),
        ]);
        let c = read(&t, "/isolinux/isolinux.cfg").unwrap();
        let got: Vec<(&str, &str)> =
            c.entries.iter().map(|e| (e.label.as_str(), e.title.as_deref().unwrap_or(""))).collect();
        assert_eq!(
            got,
            [
                ("install", "Install"),
                ("installdark", "Accessible dark contrast installer menu > Install"),
                ("installspk", "Install with speech synthesis")
            ]
        );
        assert_eq!(c.default, None, "the submenu's default is not the top menu's");
        assert_eq!(c.skipped, ["mainmenu", "help"]);
        assert_eq!(c.timeout, None, "prompt.cfg is not read: its PROMPT 1 is not the menu's");
        let g = grub_menu(&c).unwrap();
        assert!(!g.contains("set default") && g.starts_with("menuentry 'Install' --id 'install'"), "{g}");
    }

    #[test]
    fn include_loops_end_at_the_cap() {
        let t = tree(&[("a.cfg", "include a.cfg\n")]);
        let e = read(&t, "/a.cfg").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Refused);
        assert!(e.to_string().contains("more than 64 files"), "{e}");
        let e = grub_menu(&Config {
            entries: vec![Entry { label: "x".into(), kernel: "/it's".into(), ..Entry::default() }],
            ..Config::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("cannot be written into a GRUB script"), "{e}");
    }
}
