//! `[[agencies]]` and `[[peers]]`: the parties that call and own services, with the
//! certificate identities and pins that name them.

use std::collections::HashMap;

use super::parse::{agencies_code, check_id, classification, parse_pin};
use super::*;

/// The parties that validated, their names, and identity value → index.
pub(super) struct Parties {
    pub agencies: Vec<Agency>,
    pub index: Index,
    pub identities: HashMap<String, usize>,
}

pub(super) fn parties(
    errors: &mut Errors,
    file: &FileConfig,
    governance: Option<&Governance>,
) -> Parties {
    let mut agencies = Vec::new();
    let mut agency_index = Index::default();
    let mut identities: HashMap<String, usize> = HashMap::new();
    // [[peers]] join the agencies: consumers like them, under agreements like them.
    let peers = file.peers.iter().enumerate().map(|(i, p)| {
        let party = match p.kind.as_str() {
            "provincial" => Some(Party::Provincial),
            "national" => Some(Party::National),
            other => {
                errors.push(
                    format!("peers[{i}].kind"),
                    format!("`{other}` is not a peer kind; use \"provincial\" or \"national\""),
                );
                None
            }
        };
        let entry = AgencyEntry {
            code: p.id.clone(),
            name: p.name.clone().unwrap_or_else(|| p.id.clone()),
            clearance: p.clearance.clone(),
            identities: p.identities.clone(),
            pin_sha256: p.pin_sha256.clone(),
            clearance_basis: p.clearance_basis.clone(),
        };
        (format!("peers[{i}]"), "id", entry, party)
    });
    let peers: Vec<_> = peers.collect();
    let parties = file
        .agencies
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("agencies[{i}]"), "code", a, Some(Party::Agency)))
        .chain(
            peers
                .iter()
                .map(|(at, key, entry, party)| (at.clone(), *key, entry, *party)),
        );
    for (at, key, a, party) in parties {
        if !agency_index.declared.insert(a.code.clone()) {
            let message = match party {
                Some(Party::Agency) => format!("duplicate agency code `{}`", a.code),
                _ => format!("`{}` already names an agency or a peer", a.code),
            };
            errors.push(format!("{at}.{key}"), message);
            continue;
        }
        let Some(party) = party else { continue };
        if let Some(mut agency) = agency(errors, &at, key, a, governance) {
            agency.party = party;
            for (j, name) in agency.identities.iter().enumerate() {
                match identities.get(name) {
                    Some(&other) => errors.push(
                        format!("{at}.identities[{j}]"),
                        format!(
                            "`{name}` already identifies agency `{}`",
                            agencies_code(&agencies, other)
                        ),
                    ),
                    None => {
                        identities.insert(name.clone(), agencies.len());
                    }
                }
            }
            agency_index.valid.insert(a.code.clone(), agencies.len());
            agencies.push(agency);
        }
    }
    // An administrator's certificate is its own: an agency's application must not be able to
    // reload or purge the gateway.
    let admin_identities = file.admin.as_ref().map(|a| &a.identities);
    for (i, id) in admin_identities.into_iter().flatten().enumerate() {
        if let Some(&agency) = identities.get(id) {
            errors.push(
                format!("admin.identities[{i}]"),
                format!(
                    "`{id}` identifies agency `{}`; admin certificates must name no agency or peer",
                    agencies_code(&agencies, agency)
                ),
            );
        }
    }

    Parties {
        agencies,
        index: agency_index,
        identities,
    }
}

/// An `[[agencies]]` entry, or a `[[peers]]` entry in its shape (`key` names its id key).
fn agency(
    errors: &mut Errors,
    at: &str,
    key: &str,
    a: &AgencyEntry,
    governance: Option<&Governance>,
) -> Option<Agency> {
    let code_ok = errors
        .check(format!("{at}.{key}"), check_id(&a.code))
        .is_some();
    if a.name.trim().is_empty() {
        errors.push(format!("{at}.name"), "must not be empty");
    }
    let clearance = match &a.clearance {
        None => Some(Classification::Terbuka),
        Some(c) => errors.check(format!("{at}.clearance"), classification(c)),
    };
    if let Some(clearance) = clearance {
        super::governance::clearance_basis(errors, at, a, clearance, governance);
    }
    for (j, name) in a.identities.iter().enumerate() {
        if name.trim().is_empty() {
            errors.push(format!("{at}.identities[{j}]"), "must not be empty");
        }
    }
    let mut pins = Vec::new();
    for (j, pin) in a.pin_sha256.iter().enumerate() {
        pins.extend(errors.check(format!("{at}.pin_sha256[{j}]"), parse_pin(pin)));
    }
    Some(Agency {
        code: a.code.clone(),
        party: Party::Agency,
        name: a.name.clone(),
        clearance: clearance?,
        identities: a.identities.clone(),
        pins,
        clearance_basis: a.clearance_basis.clone(),
    })
    .filter(|_| code_ok)
}
