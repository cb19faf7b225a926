//! `diskcast vm SRC -o OUT`: a container image or root filesystem made into a bootable
//! VM disk, written in one pass into any block format.
//!
//! The library ([`diskcast_vm::plan`]) does the work: kernel discovery, guest
//! preparation, the ESP with systemd-boot, the ext4 root, the GPT. Here the arguments
//! are checked, the profile picks the output format, and the [`ImageWriter`] writes the
//! plan.

use crate::common::args::{
    DiskTarget, OutputFormat, OvaArgs, SourceArgs, WriteArgs, check_gce_output, format_for_output, name_is_ambiguous,
};
use crate::common::output::{ContainerWriter, ImageWriter, Package, PackageWriter};
use crate::common::print_json;
use crate::common::tree_source::{input_path, open as open_source};
use clap::Args;
use diskcast_block::provenance::Provenance;
use diskcast_block::size::{human, parse_size};
use diskcast_block::{Error, Result};
use diskcast_oci::spec::RunConfig;
use diskcast_ova::descriptor::Firmware;
use diskcast_vm::Archive;
use diskcast_vm::guest::{CloudInit, Entrypoint, GuestOptions};
use diskcast_vm::{Arch, BootMode, Profile, VmOptions};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct VmArgs {
    /// The root filesystem: oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE,
    /// docker://REF, a directory or a tar.
    pub src: String,
    /// The disk image to write (with --profile kubevirt: the containerDisk image,
    /// oci:DIR:TAG or oci-archive:FILE:TAG; NAME.ova: an OVA; with --profile gce:
    /// NAME.tar.gz).
    #[arg(short = 'o', long = "out", value_name = "OUT")]
    pub out: PathBuf,
    /// Block format of OUT: raw, qcow2, vmdk, vhd, vhdx, vdi, or ova (an OVA package)
    /// (default: the profile's, else the one OUT's name ends with, else raw).
    #[arg(short = 'O', long = "output-format", value_name = "FMT")]
    pub output_format: Option<String>,
    /// Format options of OUT, comma separated (`diskcast formats` lists them).
    #[arg(long = "format-options", value_name = "KEY=VALUE,..")]
    pub format_options: Vec<String>,
    /// The platform the disk is for: azure, esxi, aws, hyperv, kubevirt, qemu, gce. Picks
    /// the format and its options (esxi or aws with OUT NAME.ova: an OVA; gce: disk.raw
    /// in NAME.tar.gz).
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Disk size (K, M, G); default: the content plus headroom, at least 8 GiB in a
    /// sparse format (qcow2, vmdk, vhdx, vdi, dynamic vhd), whose file stays small.
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Firmware the disk boots with: uefi (systemd-boot), bios or hybrid (GRUB; amd64
    /// only).
    #[arg(long, value_name = "uefi|bios|hybrid", default_value = "uefi")]
    pub boot: String,
    /// The guest's architecture: amd64 or arm64 (aarch64). Picks that platform from a
    /// multi-platform image (linux/ARCH, as --platform does) and refuses an image or a
    /// kernel of another; the ESP gets EFI/BOOT/BOOTX64.EFI or BOOTAA64.EFI, the root
    /// partition the architecture's type, the console ttyS0 or ttyAMA0. Default: the
    /// container image's architecture (from a multi-platform index this machine's, or
    /// the index's only image's), else the kernel's.
    #[arg(long, value_name = "amd64|arm64")]
    pub arch: Option<String>,
    /// Boot this kernel (a file on this machine) instead of the image's.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The initramfs to boot with (a file on this machine).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// The kernel's modules directory (lib/modules/VERSION, or the lib/modules holding
    /// it): which bus drivers it has built in and the modules an initramfs is built
    /// from. Default: the image's, or the one beside --kernel (an unpacked kernel package).
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// Appended to the kernel command line diskcast builds (root=PARTUUID=..., consoles).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub cmdline: Option<String>,
    /// The systemd-boot EFI binary to install, instead of the image's or this machine's.
    #[arg(long, value_name = "PATH")]
    pub loader: Option<PathBuf>,
    /// Boot with Secure Boot enforced and Microsoft's keys enrolled (Azure Trusted Launch,
    /// Hyper-V generation 2): shim signed by Microsoft as EFI/BOOT/BOOTX64.EFI, the
    /// distribution's signed GRUB and MokManager beside it, and a signed kernel. Each comes
    /// from the image (/usr/lib/shim, /usr/lib/grub/x86_64-efi-signed), else this machine
    /// (apt install shim-signed grub-efi-amd64-signed), and must carry an Authenticode
    /// signature: an unsigned one is refused before anything is written.
    #[arg(long = "secure-boot")]
    pub secure_boot: bool,
    /// With --secure-boot: the shim to install (shimx64.efi signed by Microsoft; an
    /// mmx64.efi.signed beside it is installed as MokManager).
    #[arg(long, value_name = "PATH", requires = "secure_boot")]
    pub shim: Option<PathBuf>,
    /// With --secure-boot: the signed GRUB to install (grubx64.efi.signed); its
    /// configuration is written under the prefix built into it.
    #[arg(long = "grub-efi", value_name = "PATH", requires = "secure_boot")]
    pub grub_efi: Option<PathBuf>,
    #[command(flatten)]
    pub guest: GuestArgs,
    #[command(flatten)]
    pub ova: OvaArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    /// The summary on stdout: human text or JSON (partitions, sizes, kernel, command line).
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// How the guest is prepared (besides fstab, an empty machine-id and DHCP, which every
/// disk gets).
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// The guest's host name (/etc/hostname, /etc/hosts).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// root's password as a crypt(3) hash (`openssl passwd -6`), set in /etc/shadow.
    #[arg(long = "root-password-hash", value_name = "HASH")]
    pub root_password_hash: Option<String>,
    /// An OpenSSH public key file (e.g. ~/.ssh/id_ed25519.pub) for
    /// /root/.ssh/authorized_keys.
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// Run the image's ENTRYPOINT and CMD as a systemd service at boot (the image needs
    /// systemd).
    #[arg(long = "run-entrypoint")]
    pub run_entrypoint: bool,
    /// cloud-init user data (a `#cloud-config` YAML, a `#!` script, MIME multipart...),
    /// written as a NoCloud seed in /var/lib/cloud/seed/nocloud/ for the image's
    /// cloud-init (an image without cloud-init is refused).
    #[arg(long = "cloud-init", value_name = "USER_DATA")]
    pub cloud_init: Option<PathBuf>,
    /// The seed's meta-data (YAML); default: `instance-id: iid-diskcast-<root PARTUUID>`
    /// and --hostname as `local-hostname`.
    #[arg(long = "meta-data", value_name = "FILE", requires = "cloud_init")]
    pub meta_data: Option<PathBuf>,
    /// The seed's network-config (cloud-init network config version 1 or 2).
    #[arg(long = "network-config", value_name = "FILE", requires = "cloud_init")]
    pub network_config: Option<PathBuf>,
}

/// A small regular file named by `flag` (at most `limit` bytes), read whole.
fn read_small(path: &Path, flag: &str, what: &str, limit: u64) -> Result<Vec<u8>> {
    let md =
        std::fs::metadata(path).map_err(|e| Error::io(format!("cannot open the {flag} file"), e).with_file(path))?;
    if !md.is_file() || md.len() > limit {
        return Err(
            Error::argument(format!("{flag}: not {what} (a regular file up to {})", human(limit))).with_file(path)
        );
    }
    std::fs::read(path).map_err(|e| Error::io(format!("cannot read the {flag} file"), e).with_file(path))
}

impl GuestArgs {
    /// The options; the entrypoint is filled in once the image's config is known.
    fn options(&self) -> Result<GuestOptions> {
        use diskcast_vm::guest::{CLOUD_INIT_LIMIT, SSH_KEYS_LIMIT};
        let ssh_keys = self
            .ssh_key
            .as_deref()
            .map(|p| read_small(p, "--ssh-key", "a public key file", SSH_KEYS_LIMIT))
            .transpose()?;
        let seed = |p: &Option<PathBuf>, flag: &str| {
            p.as_deref().map(|p| read_small(p, flag, "a cloud-init file", CLOUD_INIT_LIMIT)).transpose()
        };
        let cloud_init = match seed(&self.cloud_init, "--cloud-init")? {
            Some(user_data) => Some(CloudInit {
                user_data,
                meta_data: seed(&self.meta_data, "--meta-data")?,
                network_config: seed(&self.network_config, "--network-config")?,
            }),
            None => None,
        };
        Ok(GuestOptions {
            hostname: self.hostname.clone(),
            root_password_hash: self.root_password_hash.clone(),
            ssh_keys,
            run_entrypoint: None,
            run_entrypoint_without_config: false,
            cloud_init,
        })
    }
}

/// ENTRYPOINT followed by CMD, with Env, WorkingDir and User, from an image's config.
fn entrypoint(config: &RunConfig) -> Entrypoint {
    let mut argv = config.entrypoint.clone().unwrap_or_default();
    argv.extend(config.cmd.clone().unwrap_or_default());
    Entrypoint {
        argv,
        env: config.env.clone().unwrap_or_default(),
        workdir: config.working_dir.clone(),
        user: config.user.clone(),
    }
}

/// The output format and options: the profile's, checked against `-O`.
fn disk_target(a: &VmArgs, profile: Option<Profile>) -> Result<DiskTarget> {
    // A containerDisk target (oci:DIR:TAG) has no file name to go by.
    let named = match profile {
        Some(Profile::Kubevirt) => a.output_format.clone(),
        _ => format_for_output(&a.out, a.output_format.as_deref())?,
    };
    let (output_format, format_options, compress) = match profile {
        Some(p) => {
            // `.img` without -O: the profile's format (the name says raw only by default).
            let named = named.filter(|_| a.output_format.is_some() || !name_is_ambiguous(&a.out));
            if a.output_format.is_none()
                && let Some(n) = &named
                && n != p.output().format
            {
                return Err(Error::argument(format!(
                    "the output's name {} says {n}, but --profile {} writes {}; rename the output",
                    a.out.display(),
                    p.name(),
                    p.output().format
                )));
            }
            let r = p.resolve(named.as_deref(), &a.format_options, a.write.compress, &[])?;
            (r.format, r.options, r.compress)
        }
        None => (named.unwrap_or_else(|| "raw".to_string()), a.format_options.clone(), a.write.compress),
    };
    Ok(DiskTarget {
        output: a.out.clone(),
        format: output_format,
        format_options,
        write: WriteArgs { compress, ..a.write.clone() },
    })
}

/// The archive OUT is, if any: an OVA (`-O ova` or OUT NAME.ova; --profile esxi, aws or
/// none), or gce's tar.gz; with the output the disk is planned for (the OVA's
/// streamOptimized VMDK, gce's raw disk).
fn package_of(a: &VmArgs, profile: Option<Profile>, boot: BootMode) -> Result<Option<(Package, DiskTarget)>> {
    let given = a.output_format.as_deref();
    let named_ova = Archive::Ova.named(&a.out);
    if named_ova && given.is_some_and(|g| g != "ova") {
        return Err(Error::argument(format!(
            "-O {} contradicts the output's name {}, which says ova; drop -O or rename the output",
            given.unwrap_or_default(),
            a.out.display()
        )));
    }
    let planned = |format: &str, options: &[&str], compress: bool| DiskTarget {
        output: a.out.clone(),
        format: format.to_string(),
        format_options: options.iter().map(|o| o.to_string()).collect(),
        write: WriteArgs { compress, ..a.write.clone() },
    };
    let ova = named_ova || given == Some("ova");
    if (ova || profile == Some(Profile::Gce)) && !a.format_options.is_empty() {
        return Err(Error::argument(
            "--format-options do not apply to an OVA or gce output, whose disk format is fixed",
        ));
    }
    if ova {
        let firmware = if boot == BootMode::Uefi { Firmware::Efi } else { Firmware::Bios };
        let hw = a.ova.hardware(&a.out, profile, Some(firmware))?;
        return Ok(Some((Package::Ova(hw), planned("vmdk", &["subformat=streamOptimized"], true))));
    }
    if profile != Some(Profile::Gce) {
        return Ok(None);
    }
    if given.is_some_and(|g| g != "raw") {
        return Err(Error::argument("-O contradicts --profile gce, which writes disk.raw in a tar.gz"));
    }
    check_gce_output(&a.out)?;
    Ok(Some((Package::Gce, planned("raw", &[], false))))
}

/// Where the disk goes: an image file, or an archive holding it.
enum Sink {
    Image(ImageWriter),
    Package(PackageWriter),
}

/// Whether the output format stores only written clusters (a fixed VHD and raw do not).
fn sparse(out: &DiskTarget) -> bool {
    let fixed = out.format_options.iter().flat_map(|g| g.split(',')).any(|o| o.trim() == "subformat=fixed");
    matches!(out.format.as_str(), "qcow2" | "vmdk" | "vhdx" | "vdi" | "vhd" | "vpc") && !fixed
}

/// The architecture `--arch` asks for, made the platform a container image is picked by:
/// `--platform` (when also given) must name the same architecture.
fn requested_arch(a: &mut VmArgs) -> Result<Option<Arch>> {
    let Some(name) = a.arch.as_deref() else { return Ok(None) };
    let arch = Arch::parse(name)?;
    let platform = &mut a.source.container.platform;
    match platform.as_deref().map(diskcast_oci::spec::Platform::parse).transpose()? {
        Some(p) if Arch::from_oci(&p.architecture) != Some(arch) || p.os != "linux" => {
            return Err(Error::argument(format!(
                "--platform {p} contradicts --arch {arch}: drop --platform (--arch picks linux/{arch})"
            )));
        }
        Some(_) => {}
        None => *platform = Some(format!("linux/{}", arch.name())),
    }
    Ok(Some(arch))
}

/// The architecture of the image `opened` holds: `None` for sources other than container
/// images; a platform diskcast cannot make a VM of is refused.
fn image_arch(opened: &diskcast_sources::Opened) -> Result<Option<Arch>> {
    let Some(p) = &opened.platform else { return Ok(None) };
    if p.architecture.is_empty() {
        return Ok(None);
    }
    match Arch::from_oci(&p.architecture) {
        Some(a) if p.os == "linux" || p.os.is_empty() => Ok(Some(a)),
        _ => Err(Error::unsupported(format!(
            "the image is for {p}; diskcast vm makes linux/amd64 and linux/arm64 disks (pick another image of an \
             index with --arch)"
        ))),
    }
}

pub fn run(mut a: VmArgs) -> Result<u8> {
    let profile = a.profile.as_deref().map(Profile::parse).transpose()?;
    let boot = BootMode::parse(&a.boot)?;
    let arch = requested_arch(&mut a)?;
    // Without --arch, an index's only image is the disk's, whatever its architecture.
    a.source.container.lone_platform = true;
    // kubevirt: the qcow2 goes to a temporary file beside the oci:/oci-archive: target.
    let mut staged = diskcast_vm::container_disk::Staged::for_output(profile, &a.out.to_string_lossy())?;
    let package = package_of(&a, profile, boot)?;
    let mut out = match &package {
        Some((_, planned)) => planned.clone(),
        None => disk_target(&a, profile)?,
    };
    if let Some(s) = &staged {
        out.output = s.disk.clone();
    }
    // Every file the disk is made from: none of them may be the output.
    let mut inputs: Vec<PathBuf> = input_path(&a.src).into_iter().collect();
    let g = &a.guest;
    inputs.extend(
        [
            &a.kernel,
            &a.initrd,
            &a.loader,
            &a.shim,
            &a.grub_efi,
            &g.ssh_key,
            &g.cloud_init,
            &g.meta_data,
            &g.network_config,
        ]
        .into_iter()
        .flatten()
        .cloned(),
    );
    let (writer, threads) = match package {
        Some((p, _)) => {
            let w = PackageWriter::open(&out.output, &inputs, p, &out.write)?;
            let threads = w.threads()?;
            (Sink::Package(w), threads)
        }
        None => {
            let w = ImageWriter::new(&out, &inputs)?;
            let threads = w.threads();
            (Sink::Image(w), threads)
        }
    };
    let container = staged.as_ref().map(|s| ContainerWriter::open(&s.target, &inputs, &a.write)).transpose()?;
    let opts = VmOptions {
        boot,
        arch,
        kernel: a.kernel.clone(),
        initrd: a.initrd.clone(),
        modules: a.modules.clone(),
        cmdline: a.cmdline.clone(),
        loader: a.loader.clone(),
        secure_boot: a.secure_boot,
        shim: a.shim.clone(),
        grub_efi: a.grub_efi.clone(),
        disk_size: a.size.as_deref().map(parse_size).transpose()?,
        min_disk_size: sparse(&out).then_some(diskcast_vm::SPARSE_MIN_SIZE),
        profile,
        guest: GuestOptions {
            // Known before the source is read: only container images have an entrypoint.
            run_entrypoint_without_config: a.guest.run_entrypoint && !diskcast_oci::is_image_ref(&a.src),
            ..a.guest.options()?
        },
    };
    opts.validate()?;
    let opened = open_source(&a.src, &a.source, threads)?;
    let mut opts = opts;
    // Without --arch, the image's architecture (--arch made open_source refuse another).
    if opts.arch.is_none() {
        opts.arch = image_arch(&opened)?;
    }
    if a.guest.run_entrypoint {
        match &opened.config {
            Some(c) => opts.guest.run_entrypoint = Some(entrypoint(c)),
            None => opts.guest.run_entrypoint_without_config = true,
        }
    }
    let prov = Provenance::from_env()?;
    let seed = format!("vm {} {:?} {:?} {:?}", a.src, a.size, a.cmdline, a.boot);
    let vm = diskcast_vm::plan(opened.tree, &opts, &prov, &seed)?;
    if let Some(s) = &mut staged {
        s.arch = vm.arch;
    }
    for w in &vm.warnings {
        eprintln!("diskcast: warning: {w}");
    }
    eprintln!("diskcast: {} from {}; loader from {}", vm.kernel, opened.description, vm.loader);
    for c in &vm.guest_changes {
        eprintln!("diskcast: guest: {c}");
    }
    let by_hand = if vm.first_boot_growth.starts_with("none") {
        ": after enlarging the disk, grow the root partition and filesystem by hand (growpart, resize2fs)"
    } else {
        ""
    };
    eprintln!("diskcast: first-boot growth: {}{by_hand}", vm.first_boot_growth);
    for d in &vm.drivers {
        eprintln!("diskcast: drivers: {d}");
    }
    for l in &vm.secure_boot {
        eprintln!("diskcast: secure boot: {l}");
    }
    match writer {
        Sink::Image(w) => w.write(&vm.image)?,
        Sink::Package(w) => w.write(&vm.image)?,
    }
    if let (Some(s), Some(container)) = (&staged, container) {
        let r = container.finish_staged(s, &prov)?;
        eprintln!("diskcast: containerDisk {} (manifest {})", s.target, r.manifest_digest);
    }
    let disk_size = vm.plan.disk_size;
    match a.output {
        OutputFormat::Human => {
            eprintln!(
                "diskcast: wrote {} ({} {}, GPT, {} boot, {})",
                a.out.display(),
                human(disk_size),
                out.format,
                boot.name(),
                vm.arch
            );
            for p in &vm.partitions {
                eprintln!(
                    "  {} {:<5} {:>9} at {:>9}  PARTUUID={}  {}",
                    p.number,
                    p.name,
                    human(p.size),
                    human(p.start),
                    p.uuid,
                    p.filesystem
                );
            }
            eprintln!("  kernel command line: {}", vm.entry.cmdline);
        }
        OutputFormat::Json => {
            let parts: Vec<_> = vm
                .partitions
                .iter()
                .map(|p| {
                    json!({
                        "number": p.number, "name": p.name, "type": p.type_guid.to_string(),
                        "partuuid": p.uuid.to_string(), "start": p.start, "size": p.size,
                        "filesystem": p.filesystem,
                    })
                })
                .collect();
            print_json(&json!({
                "output": a.out.display().to_string(),
                "format": out.format,
                "profile": profile.map(Profile::name),
                "boot": boot.name(),
                "arch": vm.arch.name(),
                "virtual-size": disk_size,
                "source": opened.description,
                "partitions": parts,
                "kernel": vm.kernel,
                "kernel-path": vm.kernel_path,
                "kernel-version": vm.kernel_version,
                "initrd": vm.initrd_path,
                "loader": vm.loader,
                "secure-boot": vm.secure_boot,
                "cmdline": vm.entry.cmdline,
                "guest-changes": vm.guest_changes,
                "first-boot-growth": vm.first_boot_growth,
                "drivers": vm.drivers,
                "warnings": vm.warnings,
            }));
        }
    }
    Ok(0)
}
