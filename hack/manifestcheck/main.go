// Command manifestcheck reads Kubernetes manifests (multi-document YAML, as
// `helm template` prints them) and checks what can be checked without a
// cluster: every document parses; has apiVersion, kind and a valid
// metadata.name, labels and annotations; no object appears twice; and every
// object of a kind client-go knows (Deployment, Service, RBAC,
// NetworkPolicy, …) decodes strictly into its Go type, so a misspelt or
// misplaced field is an error rather than something the API server drops.
// Kinds it does not know (CRDs, ServiceMonitor) are checked as unstructured
// objects only.
//
// It prints one line per object, kind/namespace/name ("-" for no
// namespace), in input order, so that scripts can check what was rendered:
//
//	helm template ... | go run ./hack/manifestcheck
//
// Files named on the command line are read instead of standard input.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

func main() {
	var inputs []string
	if len(os.Args) > 1 {
		inputs = os.Args[1:]
	} else {
		inputs = []string{"-"}
	}
	c := newChecker()
	for _, name := range inputs {
		var r io.Reader = os.Stdin
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			defer f.Close()
			r = f
		}
		if err := c.check(name, r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if c.errors > 0 {
		fmt.Fprintf(os.Stderr, "manifestcheck: %d error(s)\n", c.errors)
		os.Exit(1)
	}
	if c.objects == 0 {
		fmt.Fprintln(os.Stderr, "manifestcheck: no objects")
		os.Exit(1)
	}
}

type checker struct {
	strict  *json.Serializer
	seen    map[string]string
	objects int
	errors  int
}

func newChecker() *checker {
	return &checker{
		strict: json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
			json.SerializerOptions{Yaml: true, Strict: true}),
		seen: map[string]string{},
	}
}

var sourceComment = regexp.MustCompile(`(?m)^# Source: (.*)$`)

// check reads every document of r.
func (c *checker) check(name string, r io.Reader) error {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 1; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		where := fmt.Sprintf("%s: document %d", name, i)
		if m := sourceComment.FindSubmatch(doc); m != nil {
			where += " (" + string(m[1]) + ")"
		}
		for _, e := range c.checkDoc(doc) {
			c.errors++
			fmt.Fprintf(os.Stderr, "%s: %s\n", where, e)
		}
	}
}

// checkDoc checks one document and returns what is wrong with it.
func (c *checker) checkDoc(doc []byte) []string {
	if isEmpty(doc) {
		return nil
	}
	js, err := utilyaml.ToJSON(doc)
	if err != nil {
		return []string{"not YAML: " + err.Error()}
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return []string{"not an object: " + err.Error()}
	}
	var errs []string
	gvk := u.GroupVersionKind()
	if u.GetAPIVersion() == "" || gvk.Kind == "" {
		errs = append(errs, "apiVersion and kind are required")
	}
	if _, err := schema.ParseGroupVersion(u.GetAPIVersion()); err != nil {
		errs = append(errs, "apiVersion: "+err.Error())
	}
	meta := field.NewPath("metadata")
	if u.GetName() == "" {
		errs = append(errs, "metadata.name is required")
	} else {
		for _, msg := range validation.NameIsDNSSubdomain(u.GetName(), false) {
			errs = append(errs, "metadata.name "+u.GetName()+": "+msg)
		}
	}
	if ns := u.GetNamespace(); ns != "" {
		for _, msg := range validation.ValidateNamespaceName(ns, false) {
			errs = append(errs, "metadata.namespace "+ns+": "+msg)
		}
	}
	for _, e := range metav1validation.ValidateLabels(u.GetLabels(), meta.Child("labels")) {
		errs = append(errs, e.Error())
	}
	for _, e := range validation.ValidateAnnotations(u.GetAnnotations(), meta.Child("annotations")) {
		errs = append(errs, e.Error())
	}
	id := fmt.Sprintf("%s/%s/%s", gvk.Kind, orDash(u.GetNamespace()), u.GetName())
	key := gvk.GroupKind().String() + "/" + u.GetNamespace() + "/" + u.GetName()
	if _, dup := c.seen[key]; dup {
		errs = append(errs, "duplicate object "+id)
	}
	c.seen[key] = id
	if scheme.Scheme.Recognizes(gvk) {
		if _, _, err := c.strict.Decode(doc, &gvk, nil); err != nil {
			errs = append(errs, "as "+gvk.String()+": "+err.Error())
		}
	}
	c.objects++
	fmt.Println(id)
	return errs
}

// isEmpty reports whether doc holds only blank lines and comments.
func isEmpty(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
