//! Property tests: the parsers of untrusted bytes never panic, and the canonical string is
//! injective in the fields an attacker controls.

use proptest::prelude::*;
use trust_core::signature::{canonical_string, verify_request};
use trust_core::testing::TestPki;
use trust_core::{
    Fingerprint, NodeId, ReceivedHeaders, RequestParts, RevocationList, Serial, SignatureWindow,
    VerifiedCsr, unix_time,
};

use crate::PKI;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_string_never_panics_and_never_contains_stray_lines(
        method in ".{0,12}", authority in ".{0,40}", path in ".{0,60}",
        from in ".{0,12}", ts in ".{0,14}", nonce in ".{0,30}", body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let parts = RequestParts::new(&method, &authority, &path, &body);
        if let Ok(s) = canonical_string(&parts, &from, &ts, &nonce) {
            prop_assert_eq!(s.lines().count(), 8);
        }
    }

    #[test]
    fn different_paths_give_different_canonical_strings(a in "/[a-z0-9/?=&]{0,20}", b in "/[a-z0-9/?=&]{0,20}") {
        prop_assume!(a != b);
        let s1 = canonical_string(&RequestParts::new("GET", "h:1", &a, b""), "1", "1", "nonce");
        let s2 = canonical_string(&RequestParts::new("GET", "h:1", &b, b""), "1", "1", "nonce");
        prop_assert_ne!(s1.ok(), s2.ok());
    }

    #[test]
    fn header_parsers_never_panic(
        from in ".{0,20}", ts in ".{0,20}", nonce in ".{0,100}", auth in ".{0,60}", sig in ".{0,400}",
    ) {
        let headers = ReceivedHeaders {
            from_node: Some(&from), timestamp: Some(&ts), nonce: Some(&nonce),
            node_auth: Some(&auth), signature: Some(&sig),
        };
        let peer = &*crate::signatures_peer();
        let parts = RequestParts::new("GET", "h:1", "/", b"");
        prop_assert!(verify_request(&headers, &parts, peer, &["h:1".into()], SignatureWindow::default(), unix_time(0)).is_err());
        let _ = from.parse::<NodeId>();
        let _ = Serial::from_hex(&sig);
        let _ = Fingerprint::from_base64url(&auth);
    }

    #[test]
    fn csr_and_crl_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(VerifiedCsr::from_der(&bytes, &TestPki::name_policy()).is_err());
        prop_assert!(RevocationList::from_der(&bytes, PKI.ca.root(), unix_time(0)).is_err());
    }
}
