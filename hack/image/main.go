// Command image builds the project's container image without a container
// engine: the static binaries manager, pushnode and pushctl on an empty
// base, run as the non-root user 65532, with no shell. It writes one
// archive that both kinds of loader accept:
//
//   - an OCI image layout (oci-layout, index.json, blobs/sha256/...), which
//     `ctr images import` and so `kind load image-archive` read, and
//     `docker load` from Docker 25 on;
//   - a Docker manifest.json naming the same blobs, which `docker load` of
//     every version reads.
//
// This is the layout `docker save` writes since Docker 25.
//
//	go run ./hack/image --binaries bin/linux_amd64 --tag ghcr.io/ddpush/ddpush-operator:v0.1.0 --out bin/image.tar
//
// The archive depends on its inputs alone: file times and the image's
// creation time are --created (default: $SOURCE_DATE_EPOCH, else the Unix
// epoch), so the same binaries give the same image digest.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

func main() {
	var o Options
	flag.StringVar(&o.BinariesDir, "binaries", "", "directory holding the linux binaries manager, pushnode and pushctl (required)")
	flag.StringVar(&o.Tag, "tag", "", "image reference, e.g. ghcr.io/ddpush/ddpush-operator:v0.1.0 (required)")
	flag.StringVar(&o.Out, "out", "", "archive to write (required)")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "architecture the binaries were built for")
	flag.StringVar(&o.Version, "version", "dev", "version recorded in the image's labels")
	flag.StringVar(&o.Revision, "revision", "", "source revision recorded in the image's labels")
	created := flag.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "creation time, Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	flag.Parse()
	if err := run(&o, *created); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(o *Options, created string) error {
	if o.BinariesDir == "" || o.Tag == "" || o.Out == "" || flag.NArg() > 0 {
		flag.Usage()
		return errors.New("--binaries, --tag and --out are required, and nothing else")
	}
	if created != "" {
		sec, err := strconv.ParseInt(created, 10, 64)
		if err != nil {
			return fmt.Errorf("--created %q: not Unix seconds", created)
		}
		o.Created = time.Unix(sec, 0).UTC()
	}
	digest, err := Build(*o)
	if err != nil {
		return err
	}
	fmt.Printf("%s\t%s\t%s\n", o.Out, o.Tag, digest)
	return nil
}
