//! Who a home belongs to: its enrolment by the lock vendor, the household's
//! claim, and the binding a grant must hold to be issued.
//!
//! A home is enrolled by the first registration of its lock, at the postal
//! address the vendor installed it at; the server finds the household
//! living there (the subject the addresses of its parcels are sealed under)
//! and issues a one-time claim code for it. The household claims the home
//! with that code. Only then may a grant be issued for it, by the resident
//! who claimed it, for parcels addressed to the same household
//! ([`binding_refusal`]).
//!
//! The claim code is 80 random bits the caller draws (this module never
//! draws randomness, reads a clock or touches the vault), written as
//! Crockford base32 in four groups, `XXXX-XXXX-XXXX-XXXX`. Only a digest of
//! it is ever stored; [`MAX_REFUSED_CLAIMS`] wrong codes void it, so it
//! cannot be guessed.
//!
//! A refusal names the request's field and says what is wrong in words the
//! caller may be told: never another resident, a household id or an address.

use crate::error::{DomainError, Result, forbidden, invalid};
use crate::pb;

/// How many refused claims of one resident void a home's claim code for
/// that resident: past it, the lock's vendor must register the lock again
/// for a new code.
pub const MAX_REFUSED_CLAIMS: u32 = 5;

/// How many refused claims, of every resident together, void a home's
/// claim code for everyone.
pub const MAX_REFUSED_CLAIMS_PER_CODE: u32 = 50;

/// The random bytes of a claim code: 80 bits.
pub const CLAIM_CODE_BYTES: usize = 10;

/// Crockford's base32 alphabet: no I, L, O or U.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The symbols of a claim code, without its dashes.
const CLAIM_CODE_SYMBOLS: usize = CLAIM_CODE_BYTES * 8 / 5;

/// A claim code as shown to the household: the 80 bits of `bytes` in
/// Crockford base32, in four groups of four, `XXXX-XXXX-XXXX-XXXX`.
pub fn format_claim_code(bytes: [u8; CLAIM_CODE_BYTES]) -> String {
    let mut bits: u128 = 0;
    for b in bytes {
        bits = (bits << 8) | u128::from(b);
    }
    let mut out = String::with_capacity(CLAIM_CODE_SYMBOLS + 3);
    for i in 0..CLAIM_CODE_SYMBOLS {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        let shift = 5 * (CLAIM_CODE_SYMBOLS - 1 - i);
        let symbol = usize::try_from((bits >> shift) & 0x1f).unwrap_or_default();
        out.push(char::from(CROCKFORD[symbol]));
    }
    out
}

/// A claim code as typed, in the one form its digest is taken of: its 16
/// symbols in upper case, dashes and spaces dropped, and the letters
/// Crockford reads as digits (O as 0, I and L as 1) read so. Anything else
/// is an invalid `claim_code`.
pub fn normalise_claim_code(typed: &str) -> Result<String> {
    let mut out = String::with_capacity(CLAIM_CODE_SYMBOLS);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !CROCKFORD.iter().any(|&b| char::from(b) == c) {
            return Err(invalid(
                "claim_code",
                "is not a claim code: 16 letters and digits, as XXXX-XXXX-XXXX-XXXX",
            ));
        }
        out.push(c);
    }
    if out.len() != CLAIM_CODE_SYMBOLS {
        return Err(invalid(
            "claim_code",
            format!(
                "has {} symbols; a claim code has {CLAIM_CODE_SYMBOLS}, as XXXX-XXXX-XXXX-XXXX",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// What a grant's issue needs to know of its home, from the home's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The household the home was enrolled for.
    pub household: String,
    /// The resident who claimed it, once claimed.
    pub claimed_by: Option<String>,
    /// The household was forgotten at its request (the vault says so):
    /// nothing new is bound to it.
    pub household_forgotten: bool,
}

/// The facts a grant is issued on: its home's enrolment (`None`: the home
/// was never enrolled) and, for each of its parcels in order, the household
/// the parcel's address is sealed under (`None`: no such parcel, or no
/// address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bound {
    /// The home, as enrolled.
    pub home: Option<Enrolled>,
    /// Each parcel's household, in the grant's order.
    pub parcel_households: Vec<Option<String>>,
}

impl Bound {
    /// A home of `household` claimed by `resident`, and `parcels` parcels
    /// all addressed to that household: the facts a grant of `resident` for
    /// them is issued on (for tests of the grant's other rules, say).
    pub fn claimed(household: &str, resident: &str, parcels: usize) -> Self {
        Self {
            home: Some(Enrolled {
                household: household.to_owned(),
                claimed_by: Some(resident.to_owned()),
                household_forgotten: false,
            }),
            parcel_households: vec![Some(household.to_owned()); parcels],
        }
    }
}

/// Why a grant may not be issued for its home and parcels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbound {
    /// No lock was ever registered for the home: it is not enrolled.
    HomeNotEnrolled,
    /// The home is enrolled but its household has not claimed it.
    HomeNotClaimed,
    /// The household the home was enrolled for was forgotten.
    HouseholdForgotten,
    /// Another resident claimed the home.
    NotTheClaimant,
    /// The parcel at this index of the grant is not addressed to the home's
    /// household (or does not exist: the caller is not told which).
    ParcelOfAnotherHousehold(usize),
}

impl Unbound {
    /// A short name for counting refusals, e.g. `not_the_claimant`.
    pub fn name(&self) -> &'static str {
        match self {
            Unbound::HomeNotEnrolled => "home_not_enrolled",
            Unbound::HomeNotClaimed => "home_not_claimed",
            Unbound::HouseholdForgotten => "household_forgotten",
            Unbound::NotTheClaimant => "not_the_claimant",
            Unbound::ParcelOfAnotherHousehold(_) => "parcel_of_another_household",
        }
    }
}

impl From<Unbound> for DomainError {
    fn from(u: Unbound) -> Self {
        let precondition = |state: &str| DomainError::InvalidState {
            subject: "home_id".into(),
            action: "issue a grant",
            state: state.into(),
        };
        match u {
            Unbound::HomeNotEnrolled => {
                precondition("the home is not enrolled: its lock vendor registers it first")
            }
            Unbound::HomeNotClaimed => precondition(
                "the home is not claimed yet: its household claims it with the code of its lock",
            ),
            Unbound::HouseholdForgotten => {
                precondition("the household the home was enrolled for was forgotten at its request")
            }
            Unbound::NotTheClaimant => forbidden("home_id", "is not a home you claimed"),
            Unbound::ParcelOfAnotherHousehold(i) => forbidden(
                format!("parcel_ids[{i}]"),
                "is not addressed to the household of this home",
            ),
        }
    }
}

/// Whether `issued` may be issued on `bound`: the home enrolled and claimed
/// by the grant's resident, its household not forgotten, and every parcel
/// addressed to the home's household. The first reason it may not, if any.
pub fn binding_refusal(issued: &pb::GrantIssued, bound: &Bound) -> Option<Unbound> {
    let Some(home) = &bound.home else {
        return Some(Unbound::HomeNotEnrolled);
    };
    match &home.claimed_by {
        None => return Some(Unbound::HomeNotClaimed),
        Some(r) if *r != issued.resident_ref => return Some(Unbound::NotTheClaimant),
        Some(_) => {}
    }
    if home.household_forgotten {
        return Some(Unbound::HouseholdForgotten);
    }
    (0..issued.parcel_ids.len())
        .find(|&i| {
            bound
                .parcel_households
                .get(i)
                .and_then(Option::as_deref)
                .is_none_or(|h| h != home.household)
        })
        .map(Unbound::ParcelOfAnotherHousehold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(resident: &str, parcels: &[&str]) -> pb::GrantIssued {
        pb::GrantIssued {
            grant_id: "g-1".into(),
            home_id: "home-1".into(),
            parcel_ids: parcels.iter().map(|p| (*p).to_owned()).collect(),
            resident_ref: resident.into(),
            ..Default::default()
        }
    }

    fn enrolled(claimed_by: Option<&str>) -> Option<Enrolled> {
        Some(Enrolled {
            household: "hh-1".into(),
            claimed_by: claimed_by.map(str::to_owned),
            household_forgotten: false,
        })
    }

    fn of(households: &[Option<&str>]) -> Vec<Option<String>> {
        households.iter().map(|h| h.map(str::to_owned)).collect()
    }

    #[test]
    fn a_grant_is_bound_to_a_claimed_home_and_its_households_parcels() {
        let g = issued("res-1", &["SE-1", "SE-2"]);
        let bound = |home, parcels: &[Option<&str>]| Bound {
            home,
            parcel_households: of(parcels),
        };
        let ours = [Some("hh-1"), Some("hh-1")];
        // Given a home claimed by res-1 and parcels of its household: issued.
        assert_eq!(
            binding_refusal(&g, &bound(enrolled(Some("res-1")), &ours)),
            None
        );
        // A home never enrolled, or not claimed yet.
        assert_eq!(
            binding_refusal(&g, &bound(None, &ours)),
            Some(Unbound::HomeNotEnrolled)
        );
        assert_eq!(
            binding_refusal(&g, &bound(enrolled(None), &ours)),
            Some(Unbound::HomeNotClaimed)
        );
        // Claimed by someone else.
        assert_eq!(
            binding_refusal(&g, &bound(enrolled(Some("res-2")), &ours)),
            Some(Unbound::NotTheClaimant)
        );
        // A parcel of another household, one without an address, one that
        // does not exist: each refused at its index.
        for parcels in [
            [Some("hh-1"), Some("hh-2")],
            [Some("hh-1"), None],
            [Some("hh-1"), Some("")],
        ] {
            assert_eq!(
                binding_refusal(&g, &bound(enrolled(Some("res-1")), &parcels)),
                Some(Unbound::ParcelOfAnotherHousehold(1))
            );
        }
        let missing = Bound {
            home: enrolled(Some("res-1")),
            parcel_households: of(&[Some("hh-1")]),
        };
        assert_eq!(
            binding_refusal(&g, &missing),
            Some(Unbound::ParcelOfAnotherHousehold(1))
        );
        // A forgotten household binds nothing new.
        let mut forgotten = enrolled(Some("res-1"));
        if let Some(h) = &mut forgotten {
            h.household_forgotten = true;
        }
        assert_eq!(
            binding_refusal(&g, &bound(forgotten, &ours)),
            Some(Unbound::HouseholdForgotten)
        );
    }

    #[test]
    fn refusals_name_the_field_and_nothing_of_another_party() {
        let cases = [
            (Unbound::NotTheClaimant, "home_id", true),
            (Unbound::ParcelOfAnotherHousehold(2), "parcel_ids[2]", true),
            (Unbound::HomeNotEnrolled, "home_id", false),
            (Unbound::HomeNotClaimed, "home_id", false),
            (Unbound::HouseholdForgotten, "home_id", false),
        ];
        for (u, field, forbidden) in cases {
            let e = DomainError::from(u);
            let text = e.to_string();
            assert!(text.starts_with(field), "{text}");
            assert!(!text.contains("hh-") && !text.contains("res-"), "{text}");
            assert_eq!(
                matches!(e, DomainError::Forbidden { .. }),
                forbidden,
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_claim_code_reads_back_whatever_its_case_and_dashes() {
        let code = format_claim_code([0xff, 0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]);
        assert_eq!(code.len(), 19);
        assert_eq!(code.split('-').count(), 4);
        let normal = normalise_claim_code(&code).unwrap();
        assert_eq!(normal, code.replace('-', ""));
        assert_eq!(normalise_claim_code(&code.to_lowercase()).unwrap(), normal);
        assert_eq!(
            normalise_claim_code(&format!(" {} ", normal)).unwrap(),
            normal
        );
        // O, I and L read as the digits they look like.
        assert_eq!(
            normalise_claim_code("OIL0-0000-0000-0000").unwrap(),
            "0110000000000000"
        );
        // Every value of the 80 bits is its own code.
        assert_ne!(format_claim_code([0; 10]), format_claim_code([1; 10]));
        assert_eq!(format_claim_code([0; 10]), "0000-0000-0000-0000");
        assert_eq!(format_claim_code([0xff; 10]), "ZZZZ-ZZZZ-ZZZZ-ZZZZ");
        for bad in [
            "",
            "ZZZZ-ZZZZ-ZZZZ-ZZZ",
            "ZZZZ-ZZZZ-ZZZZ-ZZZZZ",
            "UUUU-ZZZZ-ZZZZ-ZZZZ",
            "ZZZZ_ZZZZ-ZZZZ-ZZZZ",
        ] {
            assert!(
                matches!(
                    normalise_claim_code(bad),
                    Err(DomainError::Invalid {
                        field: "claim_code",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }
}
