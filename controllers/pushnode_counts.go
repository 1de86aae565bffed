package controllers

import ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"

// settledCount is the count to record in a status that holds recorded:
// read when it moved by more than 1% of recorded, else recorded again.
// Record and online counts change on nearly every look, and a status
// written for each change (every refresh, for every pod of a large
// PushNode) costs the apiserver a write of the whole object for a figure
// nobody reads to the unit; the exact counts are in the node's metrics.
// Below 100 every change is written, and the 1% is against the recorded
// value, so a slow drift is written once it adds up.
func settledCount(recorded, read int64) int64 {
	d := read - recorded
	if d < 0 {
		d = -d
	}
	if d == 0 || d*100 <= recorded {
		return recorded
	}
	return read
}

// recordedPod is the status a PushNode records for pod i, if any.
func recordedPod(pods []ddpushv1.PushNodePodStatus, i int) (ddpushv1.PushNodePodStatus, bool) {
	for _, p := range pods {
		if int(p.Ordinal) == i {
			return p, true
		}
	}
	return ddpushv1.PushNodePodStatus{}, false
}
