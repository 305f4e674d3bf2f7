//! Terminal rendering of routes and probes. (Being written.)

use crate::probe::ProbeReport;
use crate::route::Route;

/// The route as a tree; ANSI colour when `color`.
pub fn route_text(route: &Route, _color: bool) -> String {
    format!("{route:?}")
}

pub fn probe_text(report: &ProbeReport, _color: bool) -> String {
    format!("{report:?}")
}
