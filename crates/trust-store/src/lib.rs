//! # trust-store
//!
//! The certificate authority's state on disk, in one directory (default
//! `/etc/sovereign/certs`):
//!
//! | file | mode | what |
//! |---|---|---|
//! | `ca-key.pem` | 0600 | the root's PKCS#8 private key; never served |
//! | `ca-cert.pem` | 0644 | the root certificate |
//! | `revocations.json` | 0644 | revoked serials and the last CRL number |
//! | `crl.pem`, `crl.der` | 0644 | the last published CRL |
//!
//! Every write is crash-safe ([`write_atomic`]: temp file, fsync, rename, fsync the
//! folder), so after `kill -9` a file holds either its old or its new content, and the
//! temp file a crash left is removed at the next open ([`remove_interrupted_writes`]). A
//! revocation is on disk before [`CaDirectory::revoke`] returns.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`files`] | [`write_atomic`] and permission checks |
//! | [`crash`] | crash points for the fault-injection tests (the `failpoints` feature) |
//! | [`ca_dir`] | [`CaDirectory`]: init, open, revoke, publish the CRL |
//! | [`error`] | [`Error`] |

pub mod ca_dir;
pub mod crash;
pub mod error;
pub mod files;

pub use ca_dir::{CaDirectory, RevocationRecord, Revoked};
pub use error::{Error, Result};
pub use files::{EXPOSED_SECRET, SecretFile, read_secret, remove_interrupted_writes, write_atomic};
