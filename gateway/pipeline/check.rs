//! Check the response: against the operation's response schema before the caller sees it;
//! under `schema_mode = "monitor"` a violation is noted and the answer passed on.

use http::Response;

use crate::body::Body;
use crate::budget::Held;
use crate::reject::Reject;
use crate::validate::{self, Checked};

use super::route::To;
use super::Facts;

pub(super) async fn response(
    to: &To<'_>,
    response: Response<Body>,
    facts: &mut Facts,
    held: &mut Held,
) -> Result<Response<Body>, Reject> {
    let (response, checked) = validate::response(to.service, to.operation, response, held).await?;
    facts.unconforming = checked == Checked::ForwardedUnconforming;
    Ok(response)
}
