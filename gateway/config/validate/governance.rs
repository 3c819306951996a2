//! `[governance]`, and what an agreement needs besides its terms: its legal basis and the
//! signatures of its parties (Perbup Maluku Tengah 50/2020 Ps 14(3), (8)).
//!
//! Under `owner_consent = "required"` an agreement for a service above `terbuka` loads only
//! when its data owner signed its terms ([`crate::consent`]), or when it rests on the Bupati's
//! written order. A signature that is present is checked in every mode: a file that names a
//! signature which does not verify is an error, never a warning.

use std::collections::HashMap;

use rustls::server::danger::ClientCertVerifier;

use super::parse::date;
use super::*;
use crate::config::file::GovernanceSection;
use crate::config::snapshot::{Basis, Governance, OwnerConsent, SignedBy};
use crate::consent::{self, Role, SignatureFile, Terms};

const DEFAULT_MAX_ORDER_DAYS: u32 = 30;

/// What `[governance]` gives the rest of validation.
pub(super) struct GovernanceParts {
    pub settings: Option<Governance>,
    /// Checks signer certificates: `[governance] signer_ca`, else the listener's client CAs.
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// `[governance]` is absent: an old file, loaded as before and without warnings.
    pub implicit: bool,
}

pub(super) fn governance(
    errors: &mut Errors,
    file: &FileConfig,
    resolve: &dyn Fn(&str) -> PathBuf,
    client_verifier: Option<&Arc<dyn ClientCertVerifier>>,
    certificates: &mut Vec<CertInfo>,
) -> GovernanceParts {
    let empty = GovernanceSection {
        owner_consent: None,
        signer_ca: Vec::new(),
        max_order_days: None,
    };
    let section = file.governance.as_ref().unwrap_or(&empty);
    let owner_consent = match section.owner_consent.as_deref() {
        None | Some("warn") => Some(OwnerConsent::Warn),
        Some("required") => Some(OwnerConsent::Required),
        Some(other) => {
            errors.push(
                "governance.owner_consent",
                format!("`{other}` is not a mode; use \"required\" or \"warn\""),
            );
            None
        }
    };
    let max_order_days = match section.max_order_days {
        None => Some(DEFAULT_MAX_ORDER_DAYS),
        Some(0) => {
            errors.push("governance.max_order_days", "must be at least 1");
            None
        }
        Some(days) => Some(days),
    };
    let verifier = if section.signer_ca.is_empty() {
        client_verifier.cloned()
    } else {
        let mut roots = Some(Vec::new());
        for (i, ca) in section.signer_ca.iter().enumerate() {
            let path = format!("governance.signer_ca[{i}]");
            match errors.check(&path, crate::tls::load_certs(&resolve(ca))) {
                Some(certs) => {
                    certificates.extend(
                        certs
                            .iter()
                            .filter_map(|c| crate::tls::cert_info(&path, &resolve(ca), c)),
                    );
                    if let Some(all) = &mut roots {
                        all.extend(certs);
                    }
                }
                None => roots = None,
            }
        }
        roots.and_then(|roots| {
            errors.check(
                "governance.signer_ca",
                crate::tls::client_verifier(roots, Vec::new()),
            )
        })
    };
    GovernanceParts {
        settings: owner_consent
            .zip(max_order_days)
            .map(|(owner_consent, max_order_days)| Governance {
                owner_consent,
                max_order_days,
            }),
        verifier,
        implicit: file.governance.is_none(),
    }
}

/// Under `owner_consent = "required"`, a clearance above `terbuka` names the decision that set it.
pub(super) fn clearance_basis(
    errors: &mut Errors,
    at: &str,
    entry: &AgencyEntry,
    clearance: Classification,
    governance: Option<&Governance>,
) {
    if entry
        .clearance_basis
        .as_ref()
        .is_some_and(|b| b.trim().is_empty())
    {
        errors.push(format!("{at}.clearance_basis"), "must not be empty");
    }
    let required = governance.is_some_and(|g| g.owner_consent == OwnerConsent::Required);
    if required && clearance > Classification::Terbuka && entry.clearance_basis.is_none() {
        errors.push(
            format!("{at}.clearance_basis"),
            format!(
                "is required for clearance `{}` ([governance] owner_consent = \"required\"): name the decision that set it",
                clearance.as_str()
            ),
        );
    }
}

/// The terms of an agreement entry, as its parties sign them. `file` supplies the service's
/// operations when the agreement covers them all.
pub fn terms(entry: &AgreementEntry, file: &FileConfig) -> Terms {
    let mut operations = match &entry.operations {
        Some(list) => list.clone(),
        None => file
            .services
            .iter()
            .find(|s| s.id == entry.service)
            .map(|s| s.operations.iter().map(|o| o.id.clone()).collect())
            .unwrap_or_default(),
    };
    operations.sort();
    operations.dedup();
    Terms {
        basis: entry
            .basis
            .clone()
            .unwrap_or_else(|| Basis::Kesepakatan.as_str().to_owned()),
        consumer: entry.consumer.clone(),
        document_sha256: entry.document_sha256.clone(),
        id: entry.id.clone(),
        operations,
        purpose: entry.purpose.clone(),
        rate: entry.rate.clone(),
        service: entry.service.clone(),
        sop: entry.sop.clone(),
        valid_from: entry.valid_from.to_string(),
        valid_until: entry.valid_until.to_string(),
    }
}

/// The legal basis of an agreement and the keys that only it may use.
pub(super) fn basis(
    errors: &mut Errors,
    at: &str,
    a: &AgreementEntry,
    governance: Option<&Governance>,
    valid: Option<(Date, Date)>,
) -> Option<Basis> {
    if let Some(digest) = &a.document_sha256 {
        let ok = digest.len() == 64
            && digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            errors.push(
                format!("{at}.document_sha256"),
                "must be the document's SHA-256 in 64 lowercase hex digits (`sha256sum FILE`)",
            );
        }
    }
    let name = a.basis.as_deref().unwrap_or("kesepakatan");
    let only = |errors: &mut Errors, key: &str, present: bool, basis: &str| {
        if present && name != basis {
            errors.push(
                format!("{at}.{key}"),
                format!("is only for basis = \"{basis}\""),
            );
        }
    };
    only(errors, "sop", a.sop.is_some(), "sop");
    only(
        errors,
        "order_number",
        a.order_number.is_some(),
        "perintah_bupati",
    );
    only(
        errors,
        "order_date",
        a.order_date.is_some(),
        "perintah_bupati",
    );
    match name {
        "kesepakatan" => Some(Basis::Kesepakatan),
        "sop" => match a.sop.as_deref().map(str::trim) {
            Some(sop) if !sop.is_empty() => Some(Basis::Sop {
                name: sop.to_owned(),
            }),
            _ => {
                errors.push(
                    format!("{at}.sop"),
                    "basis = \"sop\" names the SOP it follows",
                );
                None
            }
        },
        "perintah_bupati" => order(errors, at, a, governance, valid),
        other => {
            errors.push(
                format!("{at}.basis"),
                format!(
                    "`{other}` is not a basis; use \"kesepakatan\", \"sop\" or \"perintah_bupati\""
                ),
            );
            None
        }
    }
}

/// Basis `perintah_bupati`: the order's number, date and document, and a bounded validity.
fn order(
    errors: &mut Errors,
    at: &str,
    a: &AgreementEntry,
    governance: Option<&Governance>,
    valid: Option<(Date, Date)>,
) -> Option<Basis> {
    let number = match a.order_number.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => Some(n.to_owned()),
        _ => {
            errors.push(
                format!("{at}.order_number"),
                "basis = \"perintah_bupati\" needs the number of the Bupati's written order",
            );
            None
        }
    };
    let order_date = match &a.order_date {
        Some(d) => errors.check(format!("{at}.order_date"), date(d)),
        None => {
            errors.push(
                format!("{at}.order_date"),
                "basis = \"perintah_bupati\" needs the date of the order",
            );
            None
        }
    };
    if a.document_sha256.is_none() {
        errors.push(
            format!("{at}.document_sha256"),
            "basis = \"perintah_bupati\" needs the SHA-256 of the order's document",
        );
    }
    if let (Some((from, until)), Some(g)) = (valid, governance) {
        let days = days_between(from, until) + 1;
        if days > i64::from(g.max_order_days) {
            errors.push(
                format!("{at}.valid_until"),
                format!(
                    "an agreement on the Bupati's order may last at most {} days ([governance] max_order_days); {from} to {until} is {days}",
                    g.max_order_days
                ),
            );
        }
    }
    if let (Some((from, _)), Some(d)) = (valid, order_date) {
        if d > from {
            errors.push(
                format!("{at}.order_date"),
                format!("{d} is after valid_from {from}: access cannot precede the order"),
            );
        }
    }
    Some(Basis::PerintahBupati {
        order_number: number?,
        order_date: order_date?,
    })
}

/// Who may sign for whom, and how signatures are checked.
pub(super) struct Signers<'a> {
    pub file: &'a FileConfig,
    pub governance: Option<&'a Governance>,
    pub implicit: bool,
    pub verifier: Option<&'a Arc<dyn ClientCertVerifier>>,
    pub identity: Option<IdentityField>,
    pub identities: &'a HashMap<String, usize>,
    pub agencies: &'a [Agency],
    pub resolve: &'a dyn Fn(&str) -> PathBuf,
    /// Unix seconds: a signature may not come from the future.
    pub now: i64,
}

/// Checks the owner's and the consumer's signatures of a validated agreement and records them
/// in it.
pub(super) fn signatures(
    errors: &mut Errors,
    at: &str,
    entry: &AgreementEntry,
    agreement: &mut Agreement,
    service: &Service,
    signers: &Signers<'_>,
) {
    let terms = terms(entry, signers.file);
    let mut check = |key: &str, path: &Option<String>, role: Role, party: usize| {
        let path = path.as_ref()?;
        let result = signed(signers, path, &terms, role, party)
            .map_err(|e| format!("agreement `{}`: {e}", entry.id));
        errors.check(format!("{at}.{key}"), result)
    };
    agreement.owner_signature = check(
        "owner_signature",
        &entry.owner_signature,
        Role::Owner,
        service.owner,
    );
    agreement.consumer_signature = check(
        "consumer_signature",
        &entry.consumer_signature,
        Role::Consumer,
        agreement.consumer,
    );
    let Some(governance) = signers.governance else {
        return;
    };
    let needs_owner = service.classification > Classification::Terbuka
        && !matches!(agreement.basis, Basis::PerintahBupati { .. });
    if !needs_owner || entry.owner_signature.is_some() {
        return;
    }
    let owner = parse::agencies_code(signers.agencies, service.owner);
    let message = format!(
        "agreement `{}` for `{}` service `{}` is not signed by its owner `{owner}`; sign its terms with `penghubung agreement sign --id {}` and name the file here",
        agreement.id,
        service.classification.as_str(),
        service.id,
        agreement.id
    );
    match governance.owner_consent {
        OwnerConsent::Required => errors.push(
            format!("{at}.owner_signature"),
            format!("{message} ([governance] owner_consent = \"required\")"),
        ),
        OwnerConsent::Warn if !signers.implicit => {
            errors.warn(format!("{at}.owner_signature"), message)
        }
        OwnerConsent::Warn => {}
    }
}

/// Reads and verifies one signature file, and checks that its signer is `party`.
fn signed(
    signers: &Signers<'_>,
    path: &str,
    terms: &Terms,
    role: Role,
    party: usize,
) -> Result<SignedBy, String> {
    let full = (signers.resolve)(path);
    let text = std::fs::read_to_string(&full)
        .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
    let verifier = signers
        .verifier
        .ok_or("cannot be checked: the signer CAs did not load")?;
    let fail = |e: consent::ConsentError| format!("{}: {e}", full.display());
    let file = SignatureFile::parse(&text).map_err(fail)?;
    let verified =
        consent::verify(&file, terms, role, verifier.as_ref(), signers.now).map_err(fail)?;
    let field = signers
        .identity
        .ok_or("cannot be checked: [identity] field is invalid")?;
    let names = field.extract(&verified.leaf).names;
    let expected = parse::agencies_code(signers.agencies, party);
    let mut named: Vec<usize> = names
        .iter()
        .filter_map(|n| signers.identities.get(n).copied())
        .collect();
    named.sort_unstable();
    named.dedup();
    let role_name = match role {
        Role::Owner => "the service's owner",
        Role::Consumer => "the consumer",
    };
    match named.as_slice() {
        [one] if *one == party => Ok(SignedBy {
            subject: verified.subject,
            fingerprint: verified.fingerprint,
            signed_at: verified.signed_at,
        }),
        [one] => Err(format!(
            "{}: signed by `{}`, not by {role_name} `{expected}`",
            full.display(),
            parse::agencies_code(signers.agencies, *one)
        )),
        [_, _, ..] => Err(format!(
            "{}: the signer's certificate ({}) names several agencies",
            full.display(),
            verified.subject
        )),
        [] => Err(format!(
            "{}: the signer's certificate ({}) names no agency; {role_name} `{expected}` must sign",
            full.display(),
            verified.subject
        )),
    }
}

/// Whole days from `from` to `until`.
fn days_between(from: Date, until: Date) -> i64 {
    let julian = |d: Date| {
        time::Month::try_from(d.month)
            .ok()
            .and_then(|m| time::Date::from_calendar_date(i32::from(d.year), m, d.day).ok())
            .map_or(0, |d| i64::from(d.to_julian_day()))
    };
    julian(until) - julian(from)
}
