package controllers

// The manager serves its metrics only to callers the API server
// authenticates and authorizes (cmd/manager, --metrics-secure), which
// takes these two reviews.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
