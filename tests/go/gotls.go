// A Go HTTPS server and client for tests/tests/tls_go.rs (standard library only).
//
//	gotls server <addr> <cert.pem> <key.pem>   serves /ok* with 200, anything else with 404
//	gotls client <base-url> <path>...          GETs each path in turn on one keep-alive
//	                                           connection, prints "<status> <path>" per request
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: gotls server <addr> <cert> <key> | gotls client <base-url> <path>...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		serve(os.Args[2], os.Args[3], os.Args[4])
	case "client":
		fetch(os.Args[2], os.Args[3:])
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}

func serve(addr, cert, key string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := "hello over go tls\n"
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		if strings.HasPrefix(r.URL.Path, "/ok") {
			w.WriteHeader(200)
		} else {
			w.WriteHeader(404)
		}
		io.WriteString(w, body)
	})
	srv := &http.Server{
		Addr:    addr,
		Handler: h,
		// HTTP/1.1 only: an empty map turns off the automatic HTTP/2 over ALPN.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	if err := srv.ListenAndServeTLS(cert, key); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func fetch(base string, paths []string) {
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}}
	for _, p := range paths {
		resp, err := client.Get(base + p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// Read to the end so the connection is reused (keep-alive).
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, p)
	}
}
