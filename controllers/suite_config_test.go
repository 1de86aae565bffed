package controllers_test

import (
	"go.uber.org/zap/zapcore"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
)

func ctrlConfig() config.Controller {
	return config.Controller{SkipNameValidation: ptr.To(true)}
}

func zapLevelError() zapcore.Level { return zapcore.ErrorLevel }

func clientInNamespace(ns string) client.ListOption { return client.InNamespace(ns) }
