//! `[[agreements]]`: the data-sharing agreements (perjanjian bagi pakai data) — who may call
//! which operations of whose service, for what purpose, from when until when, at what rate.

use std::collections::HashSet;

use super::governance::{self, Signers};
use super::parse::{check_agreement_id, date, opt, unknown};
use super::*;

pub(super) fn agreements(
    errors: &mut Errors,
    file: &FileConfig,
    agency_index: &Index,
    service_index: &Index,
    services: &[Service],
    signers: &Signers<'_>,
) -> Vec<Agreement> {
    let mut agreements = Vec::new();
    let mut agreement_ids = HashSet::new();
    for (i, a) in file.agreements.iter().enumerate() {
        let at = format!("agreements[{i}]");
        if !agreement_ids.insert(a.id.as_str()) {
            errors.push(
                format!("{at}.id"),
                format!("duplicate agreement id `{}`", a.id),
            );
            continue;
        }
        if let Some(mut agreement) = agreement(
            errors,
            &at,
            a,
            agency_index,
            service_index,
            services,
            signers,
        ) {
            let service = &services[agreement.service];
            governance::signatures(errors, &at, a, &mut agreement, service, signers);
            agreements.push(agreement);
        }
    }

    agreements
}

fn agreement(
    errors: &mut Errors,
    at: &str,
    a: &AgreementEntry,
    agency_index: &Index,
    service_index: &Index,
    services: &[Service],
    signers: &Signers<'_>,
) -> Option<Agreement> {
    let id_ok = errors
        .check(format!("{at}.id"), check_agreement_id(&a.id))
        .is_some();
    let consumer = errors
        .check(
            format!("{at}.consumer"),
            agency_index.resolve("agency", &a.consumer),
        )
        .flatten();
    let service = errors
        .check(
            format!("{at}.service"),
            service_index.resolve("service", &a.service),
        )
        .flatten();
    let operations = match (&a.operations, service) {
        (None, _) => Some(None),
        (Some(list), _) if list.is_empty() => {
            errors.push(
                format!("{at}.operations"),
                "is empty; omit the key to cover every operation of the service",
            );
            None
        }
        (Some(list), Some(s)) => {
            let ops = &services[s].operations;
            let mut found = Some(Vec::new());
            for (k, name) in list.iter().enumerate() {
                let hit = ops.iter().position(|o| &o.id == name).ok_or_else(|| {
                    unknown(
                        &format!("operation of service `{}`", a.service),
                        name,
                        ops.iter().map(|o| &o.id),
                    )
                });
                match (
                    errors.check(format!("{at}.operations[{k}]"), hit),
                    &mut found,
                ) {
                    (Some(i), Some(v)) => v.push(i),
                    _ => found = None,
                }
            }
            found.map(Some)
        }
        (Some(_), None) => None,
    };
    if a.purpose.trim().is_empty() {
        errors.push(
            format!("{at}.purpose"),
            "must state the purpose of the data sharing",
        );
    }
    let from = errors.check(format!("{at}.valid_from"), date(&a.valid_from));
    let until = errors.check(format!("{at}.valid_until"), date(&a.valid_until));
    if let (Some(f), Some(u)) = (from, until) {
        if u < f {
            errors.push(
                format!("{at}.valid_until"),
                format!("{u} is before valid_from {f}"),
            );
        }
    }
    let rate = opt(errors, &format!("{at}.rate"), &a.rate, parse_rate);
    let basis = governance::basis(errors, at, a, signers.governance, from.zip(until));
    let agreement = Agreement {
        id: a.id.clone(),
        consumer: consumer?,
        service: service?,
        operations: operations?,
        purpose: a.purpose.clone(),
        valid_from: from?,
        valid_until: until?,
        rate: rate?,
        basis: basis?,
        document_sha256: a.document_sha256.clone(),
        owner_signature: None,
        consumer_signature: None,
    };
    id_ok.then_some(agreement)
}
