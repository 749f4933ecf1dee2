//! Targets for text a peer sends: invite links, the JSON events of the
//! publish and follow sockets, and DPoP proofs.

use std::fmt::Debug;

use sealcast_protocol::api::{ErrorBody, FollowerEvent, PublisherEvent};
use sealcast_protocol::dpop::{
    target_uri, thumbprint_of, verify_proof, PROOF_MAX_AGE_SECS, PROOF_MAX_FUTURE_SECS,
};
use sealcast_protocol::InviteLink;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Request URL that the seed DPoP proofs were made for.
pub const FUZZ_URL: &str = "https://127.0.0.1:8443/v1/sessions";

/// Unix time, in seconds, that the seed DPoP proofs were made at and are verified at.
pub const FUZZ_NOW: u64 = 1_780_000_000;

/// Access token that the seed proofs with an `ath` claim name.
pub const FUZZ_ACCESS_TOKEN: &str = "fuzz-access-token";

/// Parses an invite link. A link that parses must print as a link that
/// parses to the same relay, token and key.
pub fn invite_link(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(link) = InviteLink::parse(text) else {
        return;
    };
    let printed = link.to_url();
    let again = match InviteLink::parse(&printed) {
        Ok(again) => again,
        Err(error) => panic!("the printed link {printed:?} does not parse: {error}"),
    };
    assert_eq!(again.relay, link.relay, "relay changed");
    assert_eq!(again.token, link.token, "token changed");
    assert_eq!(
        again.key.expose_bytes(),
        link.key.expose_bytes(),
        "key changed"
    );
}

/// Parses the input as each JSON message of the socket API; a message that
/// parses must serialize and parse back to the same value.
pub fn events(data: &[u8]) {
    round_trip::<PublisherEvent>(data);
    round_trip::<FollowerEvent>(data);
    let _ = serde_json::from_slice::<ErrorBody>(data);
}

/// Verifies the input as a DPoP proof for `POST` [`FUZZ_URL`] at
/// [`FUZZ_NOW`], without and with [`FUZZ_ACCESS_TOKEN`]. A proof that
/// verifies must be recent, must fail for another method, and must carry a
/// thumbprint that matches its key.
pub fn dpop_proof(data: &[u8]) {
    let Ok(proof) = std::str::from_utf8(data) else {
        return;
    };
    let _ = target_uri(proof);
    for access_token in [None, Some(FUZZ_ACCESS_TOKEN)] {
        let Ok(verified) = verify_proof(proof, "POST", FUZZ_URL, access_token, FUZZ_NOW) else {
            continue;
        };
        assert!(
            verified.iat <= FUZZ_NOW + PROOF_MAX_FUTURE_SECS,
            "a proof from the future verified"
        );
        assert!(
            verified.iat + PROOF_MAX_AGE_SECS >= FUZZ_NOW,
            "an expired proof verified"
        );
        assert!(
            verify_proof(proof, "GET", FUZZ_URL, access_token, FUZZ_NOW).is_err(),
            "a POST proof verified for GET"
        );
        assert_eq!(
            thumbprint_of(&verified.public_key).ok(),
            Some(verified.thumbprint),
            "the thumbprint does not match the key"
        );
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let encoded = match serde_json::to_vec(&value) {
        Ok(encoded) => encoded,
        Err(error) => panic!("{value:?} does not serialize: {error}"),
    };
    match serde_json::from_slice::<T>(&encoded) {
        Ok(again) => assert_eq!(again, value, "the value changed in a round trip"),
        Err(error) => panic!("{value:?} serialized to JSON that does not parse: {error}"),
    }
}
