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
    ctx.route.as_ref()?;
    if let Some(answer) = super::policy::run(request, ctx).await {
        return Some(answer);
    }
    None
}
