//! Which user and group ids a container may name.
//!
//! The kernel reads an id of `-1` (4294967295) in `setresuid`/`setresgid`
//! as "leave this one unchanged", so a process told to become uid
//! 4294967295 would silently stay root with its capabilities. Ids above
//! 2^31-1 are refused wherever they enter (the spec's user and groups, an
//! exec's user, the id maps of a user namespace), with runc's range and
//! the field in the message.

use oci_spec::runtime::User;

use crate::error::{Error, Result};

/// The largest id a container may name (2^31-1), as runc allows.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Refuses `id` above [`MAX_ID`], naming `field`.
pub fn check(field: &str, id: u32) -> Result<()> {
    if id > MAX_ID {
        return Err(Error::invalid(
            field,
            format!("{id} is out of range: uids and gids must be in range 0-{MAX_ID}"),
        ));
    }
    Ok(())
}

/// Checks a process's uid, gid and additional gids.
pub fn check_user(user: &User) -> Result<()> {
    check("process.user.uid", user.uid())?;
    check("process.user.gid", user.gid())?;
    for (i, gid) in user.additional_gids().iter().flatten().enumerate() {
        check(&format!("process.user.additionalGids[{i}]"), *gid)?;
    }
    Ok(())
}

/// Refuses a mapped range whose last id lies above [`MAX_ID`].
pub fn check_range(field: &str, start: u32, size: u32) -> Result<()> {
    if u64::from(start) + u64::from(size) > u64::from(MAX_ID) + 1 {
        return Err(Error::invalid(
            field,
            format!("{start}+{size} runs past {MAX_ID}: uids and gids must be in range 0-{MAX_ID}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::UserBuilder;

    use super::*;

    #[test]
    fn ids_up_to_2_31_minus_1_pass() {
        assert!(check("x", 0).is_ok());
        assert!(check("x", MAX_ID).is_ok());
        assert!(check_range("m", 0, 1 << 31).is_ok());
        assert!(check_range("m", 100_000, 65_536).is_ok());
    }

    #[test]
    fn larger_ids_are_refused_naming_the_field() {
        for (uid, gid, extra, field) in [
            (u32::MAX, 0, vec![], "process.user.uid"),
            (1 << 31, 0, vec![], "process.user.uid"),
            (0, u32::MAX, vec![], "process.user.gid"),
            (0, 0, vec![1, u32::MAX], "process.user.additionalGids[1]"),
        ] {
            let user = UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .additional_gids(extra)
                .build()
                .unwrap();
            let err = check_user(&user).unwrap_err();
            assert_eq!(err.subject.as_deref(), Some(field));
            assert!(err.to_string().contains("0-2147483647"), "{err}");
        }
        assert!(check_range("m", u32::MAX, 1).is_err());
        assert!(check_range("m", 0, (1 << 31) + 1).is_err());
    }
}
