//! Gates: the request steps that may wait on something outside the worker (a shared
//! rate-limit store, a credential check off the event loop, an authentication
//! subrequest). They run after routing and before the route's action, so a gate guards
//! `respond` and `redirect` routes as well as upstreams, and every wait is bounded in
//! time by the gate itself.
//!
//! A route with no gate configured costs one check here and nothing else.

use super::answer::LocalAnswer;
use super::context::RequestContext;
use super::fields::Fields;
use super::Incoming;

/// Runs the routed request's gates in order; the first answer ends the request.
pub async fn run<F: Fields + Sync>(
    request: &Incoming<'_, F>,
    ctx: &mut RequestContext,
) -> Option<LocalAnswer> {
    let route = ctx.route.as_ref()?;
    let has_auth = route.auth.is_some();
    // Policy first: a preflight is answered without credentials (browsers send none), and
    // access lists and rate limits refuse before any password is hashed.
    if let Some(answer) = super::policy::run(request, ctx).await {
        return Some(answer);
    }
    if has_auth {
        if let Some(answer) = super::auth::gate(request, ctx).await {
            return Some(answer);
        }
    }
    None
}
