//! Users and groups as the system knows them (NSS: /etc/passwd and
//! /etc/group, or LDAP and the like where configured), looked up with
//! libc's re-entrant calls. Used for `--task-user` (who tasks run as) and
//! `--operator-group` (who may act as the operator on the socket). Each
//! lookup may block on the name service: call them at start-up or on a
//! blocking thread.

use serde::{Deserialize, Serialize};
use std::ffi::{CStr, CString, c_char, c_int};

/// A user and the groups it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Every group it is in (the primary one included).
    pub groups: Vec<u32>,
}

/// Largest buffer offered to the `*_r` lookups (they ask for more with ERANGE).
const MAX_BUF: usize = 1 << 20;

type PwLookup<'a> =
    dyn FnMut(*mut libc::passwd, *mut c_char, usize, *mut *mut libc::passwd) -> c_int + 'a;

/// Runs a getpw*_r lookup, growing its buffer as asked; the name, uid
/// and primary gid of the entry found.
fn passwd(lookup: &mut PwLookup<'_>) -> Result<Option<(String, u32, u32)>, String> {
    let mut buf: Vec<c_char> = vec![0; 4096];
    loop {
        // SAFETY: `passwd` is plain data; zeroed is a valid value, filled in by the call.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = lookup(&mut pw, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc == libc::ERANGE && buf.len() < MAX_BUF {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc).to_string());
        }
        if found.is_null() || pw.pw_name.is_null() {
            return Ok(None);
        }
        // SAFETY: on success pw_name points to a NUL-terminated string in `buf`.
        let name = unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned();
        return Ok(Some((name, pw.pw_uid, pw.pw_gid)));
    }
}

/// The groups of user `name` whose primary group is `gid` (that one first).
fn groups_of(name: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = CString::new(name) else {
        return vec![gid];
    };
    let mut n: c_int = 64;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; n as usize];
        let mut count = n;
        // SAFETY: `groups` has room for `count` entries; the call writes at
        // most that many and sets `count` to how many there are.
        let rc =
            unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            if !groups.contains(&gid) {
                groups.insert(0, gid);
            }
            return groups;
        }
        if count <= n || count > 65_536 {
            return vec![gid];
        }
        n = count;
    }
}

fn user_from(entry: Option<(String, u32, u32)>) -> Option<User> {
    entry.map(|(name, uid, gid)| User {
        groups: groups_of(&name, gid),
        name,
        uid,
        gid,
    })
}

/// The user with this uid, if the system knows one.
///
/// # Errors
/// The name service failed (the message says how).
pub fn user_by_uid(uid: u32) -> Result<Option<User>, String> {
    let mut lookup = |pw: *mut libc::passwd, buf: *mut c_char, len: usize, out| {
        // SAFETY: every pointer is valid for the call (see `passwd`).
        unsafe { libc::getpwuid_r(uid, pw, buf, len, out) }
    };
    passwd(&mut lookup).map(user_from)
}

/// The user named `spec`, or with the uid `spec` when it is a number.
///
/// # Errors
/// The name service failed, or the name holds a NUL byte.
pub fn user(spec: &str) -> Result<Option<User>, String> {
    if let Ok(uid) = spec.parse::<u32>() {
        return user_by_uid(uid);
    }
    let name = CString::new(spec).map_err(|_| format!("{spec:?} holds a NUL byte"))?;
    let mut lookup = |pw: *mut libc::passwd, buf: *mut c_char, len: usize, out| {
        // SAFETY: every pointer is valid for the call (see `passwd`).
        unsafe { libc::getpwnam_r(name.as_ptr(), pw, buf, len, out) }
    };
    passwd(&mut lookup).map(user_from)
}

/// The gid of the group named `spec`, or `spec` itself when it is a number
/// the system knows as a group.
///
/// # Errors
/// The name service failed, or the name holds a NUL byte.
pub fn group(spec: &str) -> Result<Option<u32>, String> {
    let name = CString::new(spec).map_err(|_| format!("{spec:?} holds a NUL byte"))?;
    let numeric = spec.parse::<u32>().ok();
    let mut buf: Vec<c_char> = vec![0; 4096];
    loop {
        // SAFETY: `group` is plain data; zeroed is a valid value, filled in by the call.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` has `len` bytes.
        let rc = unsafe {
            match numeric {
                Some(gid) => {
                    libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut found)
                }
                None => libc::getgrnam_r(
                    name.as_ptr(),
                    &mut gr,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                ),
            }
        };
        if rc == libc::ERANGE && buf.len() < MAX_BUF {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc).to_string());
        }
        return Ok((!found.is_null()).then_some(gr.gr_gid));
    }
}

/// Whether the user with this uid (and this primary gid, as the kernel
/// reported it) is a member of group `gid`: its primary group, or a
/// supplementary group in the group database.
pub fn is_member(uid: u32, primary_gid: u32, gid: u32) -> bool {
    if primary_gid == gid {
        return true;
    }
    matches!(user_by_uid(uid), Ok(Some(u)) if u.groups.contains(&gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_by_uid_and_unknown_names_are_none() {
        let by_name = user("root").unwrap().expect("root exists");
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert!(by_name.groups.contains(&0));
        assert_eq!(user("0").unwrap(), Some(by_name));
        assert_eq!(user("no-such-user-agora").unwrap(), None);
        assert_eq!(group("root").unwrap(), Some(0));
        assert_eq!(group("0").unwrap(), Some(0));
        assert_eq!(group("no-such-group-agora").unwrap(), None);
        assert!(user("a\0b").is_err());
        assert!(is_member(0, 0, 0));
    }
}
