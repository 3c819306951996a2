//! Authorization: default deny, by security classification and data-sharing agreement.
//!
//! A request is forwarded only when the service is `terbuka`, or the consumer's clearance
//! reaches the service's classification **and** one of the consumer's agreements for the
//! service is in force today and covers the operation. Every refusal names the rule that
//! refused it, and only ever mentions the caller's own agreements.
//!
//! Agreements are looked up by (consumer, service) in an index built with the snapshot, so the
//! decision costs the same at 5 agreements or 5,000.

use crate::config::{Agreement, Classification, Date, Snapshot};
use crate::reject::Reject;

/// What the request is allowed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A `terbuka` service, used without an agreement.
    Open,
    /// An agreement in force (index into `Snapshot::agreements`): its purpose and quota apply.
    Agreement(usize),
}

/// The request being decided.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub consumer: usize,
    pub service: usize,
    pub operation: usize,
    /// The caller's `SPL-Agreement` header, if it sent one.
    pub chosen: Option<&'a str>,
    /// Today, in the gateway's time zone.
    pub today: Date,
}

/// Decides whether `ask` may be forwarded.
pub fn authorize(snapshot: &Snapshot, ask: Ask<'_>) -> Result<Grant, Reject> {
    let service = &snapshot.services[ask.service];
    let agency = &snapshot.agencies[ask.consumer];
    let own = snapshot.agreements_for(ask.consumer, ask.service);
    let open = service.classification == Classification::Terbuka;

    if !open && agency.clearance < service.classification {
        return Err(Reject::ClearanceInsufficient {
            agency: agency.code.clone(),
            clearance: agency.clearance,
            service: service.id.clone(),
            classification: service.classification,
        });
    }

    if let Some(id) = ask.chosen {
        let Some(&index) = own.iter().find(|&&i| snapshot.agreements[i].id == id) else {
            // The same answer whether `id` belongs to another agency or to nobody.
            return Err(Reject::AgreementNotYours {
                agreement: id.to_owned(),
                agency: agency.code.clone(),
                service: service.id.clone(),
            });
        };
        let agreement = &snapshot.agreements[index];
        check_covers(snapshot, agreement, ask.operation)?;
        check_in_force(agreement, ask.today)?;
        return Ok(Grant::Agreement(index));
    }

    let mut covering = own
        .iter()
        .copied()
        .filter(|&i| covers(&snapshot.agreements[i], ask.operation));
    let mut in_force = covering
        .clone()
        .filter(|&i| in_force(&snapshot.agreements[i], ask.today));
    match (in_force.next(), in_force.next()) {
        (Some(only), None) => Ok(Grant::Agreement(only)),
        (Some(first), Some(second)) => {
            let mut candidates = vec![first, second];
            candidates.extend(in_force);
            Err(Reject::AgreementChoiceRequired {
                candidates: candidates
                    .into_iter()
                    .map(|i| snapshot.agreements[i].id.clone())
                    .collect(),
            })
        }
        (None, _) if open => Ok(Grant::Open),
        (None, _) if own.is_empty() => Err(Reject::NoAgreement {
            agency: agency.code.clone(),
            service: service.id.clone(),
        }),
        (None, _) => match covering.next() {
            None => Err(Reject::OperationNotCovered {
                service: service.id.clone(),
                operation: service.operations[ask.operation].id.clone(),
            }),
            // Covering agreements exist but none is in force: say the most useful thing, that
            // one is still to come, or else which one ended last.
            Some(first) => {
                let all = std::iter::once(first)
                    .chain(covering)
                    .map(|i| &snapshot.agreements[i]);
                let upcoming = all
                    .clone()
                    .filter(|a| a.valid_from > ask.today)
                    .min_by_key(|a| a.valid_from);
                let latest = all.max_by_key(|a| a.valid_until);
                let reason = upcoming.or(latest).unwrap_or(&snapshot.agreements[first]);
                Err(not_in_force(reason, ask.today))
            }
        },
    }
}

fn covers(agreement: &Agreement, operation: usize) -> bool {
    agreement
        .operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&operation))
}

fn in_force(agreement: &Agreement, today: Date) -> bool {
    agreement.valid_from <= today && today <= agreement.valid_until
}

fn check_covers(
    snapshot: &Snapshot,
    agreement: &Agreement,
    operation: usize,
) -> Result<(), Reject> {
    if covers(agreement, operation) {
        return Ok(());
    }
    let service = &snapshot.services[agreement.service];
    Err(Reject::OperationNotCovered {
        service: service.id.clone(),
        operation: service.operations[operation].id.clone(),
    })
}

fn check_in_force(agreement: &Agreement, today: Date) -> Result<(), Reject> {
    if in_force(agreement, today) {
        Ok(())
    } else {
        Err(not_in_force(agreement, today))
    }
}

/// The refusal for an agreement that is not in force today.
fn not_in_force(agreement: &Agreement, today: Date) -> Reject {
    if today < agreement.valid_from {
        Reject::AgreementNotYetValid {
            agreement: agreement.id.clone(),
            valid_from: agreement.valid_from,
        }
    } else {
        Reject::AgreementExpired {
            agreement: agreement.id.clone(),
            valid_until: agreement.valid_until,
        }
    }
}
