//! `diskcast check`: metadata consistency, with qemu-img's exit codes.

use crate::common::args::{ContainerArgs, ImageArgs, OutputFormat};
use crate::common::{Failure, Images, print_json, qemu_format_name, refuse_stream, threads, url_of};
use diskcast_block::ErrorKind;
use diskcast_block::io::ImageFile;
use diskcast_block::lock::{LockMode, apply};
use diskcast_block::registry::{CheckReport, Repair};
use diskcast_vm::Profile;
use serde_json::json;

/// qemu-img check's exit statuses.
const CHECK_INCOMPLETE: u8 = 1;
const CORRUPTIONS: u8 = 2;
const LEAKS: u8 = 3;
const NO_CHECK: u8 = 63;
/// `--profile`: the platform would reject the image.
const REJECTED: u8 = 4;

/// `diskcast check [--profile P] IMAGE`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Say whether platform P would accept the image, and why not: azure, esxi, aws,
    /// hyperv, kubevirt (FILE is then a container image: oci:DIR:TAG, oci-archive:...),
    /// qemu. Includes whether the kernel of the ESP's boot entry reaches the disk on the
    /// platform's bus (driver built in or in the initramfs).
    #[arg(long = "profile", value_name = "P")]
    pub profile: Option<String>,
    /// With --profile: also whether firmware with Secure Boot enforced would start the
    /// disk (Azure Trusted Launch, Hyper-V generation 2): the ESP's EFI/BOOT/BOOTX64.EFI,
    /// the grubx64.efi beside it and the kernel its configuration starts must each carry
    /// an Authenticode signature (`diskcast vm --secure-boot` writes such a disk).
    #[arg(long = "secure-boot", requires = "profile")]
    pub secure_boot: bool,
    /// Repair the image in place, as qemu-img check -r: `leaks` frees clusters nothing
    /// uses; `all` also fixes refcounts that are too low (rebuilding the refcount
    /// structures when needed) and OFLAG_COPIED, and clears the dirty bit. The image is
    /// then checked again; the exit code is that check's. qcow2 only.
    #[arg(short = 'r', long = "repair", value_name = "leaks|all")]
    pub repair: Option<String>,
    #[command(flatten)]
    pub container: ContainerArgs,
    #[command(flatten)]
    pub image: ImageArgs,
}

pub fn run(c: CheckArgs) -> Result<u8, Failure> {
    // An image refused for want of a verified signature (--verify-key) exits 4, as
    // everywhere else (and as a profile's rejection does).
    let fail = |error: diskcast_block::Error, exit_code| {
        let untrusted = error.kind() == diskcast_block::ErrorKind::Untrusted;
        Failure { error, exit_code: if untrusted { 4 } else { exit_code } }
    };
    if !c.container.verify_keys.is_empty() && !c.image.file.to_string_lossy().starts_with("docker://") {
        let e = diskcast_block::Error::untrusted(format!(
            "--verify-key checks sigstore signatures of a docker:// image; {} has no registry to hold them \
             (drop --verify-key)",
            c.image.file.display()
        ));
        return Err(fail(e, CHECK_INCOMPLETE));
    }
    if let Some(p) = &c.profile {
        let profile = Profile::parse(p).map_err(|e| fail(e, CHECK_INCOMPLETE))?;
        return profile_check(profile, &c).map_err(|e| fail(e, CHECK_INCOMPLETE));
    }
    let mut a = c.image;
    let repair = c.repair.as_deref().map(Repair::parse).transpose().map_err(|e| fail(e, CHECK_INCOMPLETE))?;
    // A repair writes: the image is locked as qemu-img check -r locks it, so a VM or
    // qemu-io using it is refused; the checker then reads it through a second handle.
    a.open.share.force_share |= repair.is_some();
    let images = Images::new(&a.open).map_err(|e| fail(e, CHECK_INCOMPLETE))?.with_tls(c.container.tls);
    let writable = match repair {
        Some(_) if url_of(&a.file).is_some() => {
            let e = diskcast_block::Error::argument(
                "check -r repairs a local image in place; an image over HTTP is read only",
            );
            return Err(fail(e, CHECK_INCOMPLETE));
        }
        Some(_) => {
            refuse_stream(&a.file).map_err(|e| fail(e, CHECK_INCOMPLETE))?;
            let file = ImageFile::open_rw(&a.file).map_err(|e| fail(e, CHECK_INCOMPLETE))?;
            apply(file.file(), &a.file, LockMode::Write).map_err(|e| fail(e, CHECK_INCOMPLETE))?;
            Some(file)
        }
        None => None,
    };
    let first = images.source(&a.file).map_err(|e| fail(e, CHECK_INCOMPLETE))?;
    let driver = match a.format.as_deref() {
        Some(f) => images.registry.get(f),
        None => images.registry.probe_source(first.as_ref()),
    }
    .map_err(|e| fail(e, CHECK_INCOMPLETE))?;
    images.refuse_unused_disk_choice(&[(&a.file, driver.name())]).map_err(|e| fail(e, CHECK_INCOMPLETE))?;
    // 63 only when the format has no checker; an image the checker cannot read (an
    // encrypted qcow2, an unsupported feature) is an error like any other, as in qemu-img.
    let failed = |e: diskcast_block::Error| match e.kind() {
        ErrorKind::NotApplicable => fail(e, NO_CHECK),
        _ => fail(e.with_file(&a.file), CHECK_INCOMPLETE),
    };
    let check = |src| driver.check(src, &images.context()).map_err(failed);
    let report = match (repair, &writable) {
        (Some(fix), Some(file)) => {
            let r = driver.repair(file, fix).map_err(failed)?;
            if r.check_errors > 0 {
                if a.output == OutputFormat::Human {
                    print_messages(&r);
                }
                return Err(fail(
                    diskcast_block::Error::corrupt(
                        "Check failed: the refcount structures must be rebuilt, which -r leaks does not do \
                         (-r all does)",
                    )
                    .with_file(&a.file),
                    CHECK_INCOMPLETE,
                ));
            }
            if r.leaks_fixed == 0 && r.corruptions_fixed == 0 {
                r
            } else {
                if a.output == OutputFormat::Human {
                    print_messages(&r);
                    println!("The following inconsistencies were found and repaired:\n");
                    println!("    {} leaked clusters", r.leaks_fixed);
                    println!("    {} corruptions\n", r.corruptions_fixed);
                    println!("Double checking the fixed image now...");
                }
                let again = diskcast_block::source::open_file(&a.file).map_err(|e| fail(e, CHECK_INCOMPLETE))?;
                CheckReport { leaks_fixed: r.leaks_fixed, corruptions_fixed: r.corruptions_fixed, ..check(again)? }
            }
        }
        _ => check(first)?,
    };
    match a.output {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&report).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("filename".into(), json!(a.file.display().to_string()));
                m.insert("format".into(), json!(qemu_format_name(driver.name())));
            }
            print_json(&v);
        }
        OutputFormat::Human => {
            if report.leaks_fixed == 0 && report.corruptions_fixed == 0 {
                print_messages(&report);
            }
            if report.corruptions == 0 && report.leaks == 0 && report.check_errors == 0 {
                println!("No errors were found on the image.");
            }
            if report.corruptions > 0 {
                println!("\n{} errors were found on the image.", report.corruptions);
                println!("Data may be corrupted, or further writes to the image may corrupt it.");
            }
            if report.leaks > 0 {
                println!("\n{} leaked clusters were found on the image.", report.leaks);
                println!("This means waste of disk space, but no harm to data.");
            }
            if report.check_errors > 0 {
                println!("\n{} internal errors have occurred during the check.", report.check_errors);
            }
            // qemu-img's line, printed only when both counts are non-zero.
            if let (Some(used @ 1..), Some(total @ 1..)) = (report.allocated_clusters, report.total_clusters) {
                let pct = |n: u64, of: u64| n as f64 * 100.0 / of as f64;
                println!(
                    "{used}/{total} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
                    pct(used, total),
                    pct(report.fragmented_clusters.unwrap_or(0), used),
                    pct(report.compressed_clusters.unwrap_or(0), used)
                );
            }
            if let Some(end) = report.image_end_offset {
                println!("Image end offset: {end}");
            }
        }
    }
    Ok(if report.check_errors > 0 {
        CHECK_INCOMPLETE
    } else if report.corruptions > 0 {
        CORRUPTIONS
    } else if report.leaks > 0 {
        LEAKS
    } else {
        0
    })
}

/// The check's (or repair's) lines, one per finding.
fn print_messages(r: &CheckReport) {
    for m in &r.messages {
        println!("{m}");
    }
}

/// `check --profile P IMAGE`: the reasons the platform would refuse IMAGE.
fn profile_check(profile: Profile, c: &CheckArgs) -> diskcast_block::Result<u8> {
    let a = &c.image;
    let images = Images::new(&a.open)?;
    let image = a.file.to_string_lossy();
    if !diskcast_oci::is_image_ref(&image) {
        refuse_stream(&a.file)?;
    }
    let oci = c.container.open_options()?;
    let mut reasons =
        diskcast_vm::check::check_image(profile, &image, a.format.as_deref(), &oci, &images.context(), threads(None)?)?;
    if c.secure_boot {
        if diskcast_oci::is_image_ref(&image) {
            return Err(diskcast_block::Error::argument(
                "--secure-boot checks a disk image's boot chain, not a container image's",
            ));
        }
        reasons.extend(diskcast_vm::check::secure_boot_rules(
            std::path::Path::new(image.as_ref()),
            a.format.as_deref(),
            &images.context(),
        )?);
    }
    match a.output {
        OutputFormat::Json => print_json(&serde_json::to_value(&reasons).unwrap_or_default()),
        OutputFormat::Human if reasons.is_empty() => println!("{image}: {} would accept it", profile.name()),
        OutputFormat::Human => {
            for r in &reasons {
                println!("{}: {}", r.code, r.message);
            }
        }
    }
    Ok(if reasons.is_empty() { 0 } else { REJECTED })
}
