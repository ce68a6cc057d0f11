"""Every registered estimator passes the conformance kit: a new plugin is tested by being registered."""

import relaxit
from relaxit_core.testing import parametrize_with_checks


@parametrize_with_checks([info.cls for info in relaxit.available()])
def test_conformance(estimator, check):
    check(estimator)
