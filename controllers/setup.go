package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// Options configure the controllers.
type Options struct {
	Builders builders.Options
	// Locator finds node pods; nil means by pod IP.
	Locator NodeLocator
}

// Setup registers both controllers, their indexes and the event
// followers with mgr.
func Setup(mgr ctrl.Manager, opt Options) error {
	if opt.Locator == nil {
		opt.Locator = &PodIPLocator{Client: mgr.GetClient()}
	}
	if err := SetupIndexes(context.Background(), mgr); err != nil {
		return err
	}
	f := NewFollowers(mgr.GetClient(), opt.Locator, ctrl.Log.WithName("followers"))
	if err := mgr.Add(f); err != nil {
		return err
	}
	if err := (&PushNodeReconciler{
		Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: mgr.GetEventRecorder("pushnode-controller"),
		Builders: opt.Builders, Locator: opt.Locator, Followers: f,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&PushMessageReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("pushmessage-controller"),
		Locator: opt.Locator, Followers: f,
	}).SetupWithManager(mgr)
}
