//! Platforms of image manifests: the host's, and whether a manifest's
//! platform is one that was asked for (OS and architecture equal after
//! normalising, the variant equal when one is asked for).

use berth_api::containerd::types::Platform;

/// The platform berthd runs on.
pub fn host() -> Platform {
    let architecture = normalise_architecture(std::env::consts::ARCH);
    Platform {
        os: std::env::consts::OS.to_string(),
        variant: if architecture == "arm64" {
            "v8".into()
        } else {
            String::new()
        },
        architecture,
        os_version: String::new(),
    }
}

/// Go's names for architectures (`x86_64` is `amd64`).
fn normalise_architecture(architecture: &str) -> String {
    match architecture {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" | "x86" => "386",
        other => other,
    }
    .to_string()
}

fn normalise_variant(architecture: &str, variant: &str) -> String {
    match (architecture, variant) {
        ("arm64", "" | "8") => "v8".into(),
        ("arm", "" | "7") => "v7".into(),
        (_, v) => v.to_string(),
    }
}

/// Whether a manifest for `have` serves `want`.
pub fn matches(want: &Platform, have: &Platform) -> bool {
    let want_arch = normalise_architecture(&want.architecture);
    let have_arch = normalise_architecture(&have.architecture);
    want.os == have.os
        && want_arch == have_arch
        && (want.variant.is_empty()
            || normalise_variant(&want_arch, &want.variant) == normalise_variant(&have_arch, &have.variant))
}

/// `os/architecture[/variant]` for messages.
pub fn format(platform: &Platform) -> String {
    let mut text = format!("{}/{}", platform.os, platform.architecture);
    if !platform.variant.is_empty() {
        text.push('/');
        text.push_str(&platform.variant);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, architecture: &str, variant: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.into(),
            os_version: String::new(),
        }
    }

    #[test]
    fn architectures_and_variants_normalise() {
        assert!(matches(&p("linux", "x86_64", ""), &p("linux", "amd64", "")));
        assert!(matches(&p("linux", "arm64", ""), &p("linux", "arm64", "v8")));
        assert!(matches(&p("linux", "arm64", "v8"), &p("linux", "aarch64", "")));
        assert!(!matches(&p("linux", "arm", "v6"), &p("linux", "arm", "v7")));
        assert!(!matches(&p("linux", "amd64", ""), &p("windows", "amd64", "")));
        assert_eq!(format(&p("linux", "arm", "v7")), "linux/arm/v7");
    }
}
