// Package shard makes a node one pod of a sharded PushNode: it holds the
// slot map, routes what arrives for uuids homed on other pods over peer
// links (the front side), and applies what other pods relay for uuids
// homed here (the home side). It implements core.Relay, peer.HomeHandler
// and peer.FrontHandler; package node wires it in.
//
// A pod without a map is a whole node: every uuid is local, no link is
// dialed, and nothing here runs on the packet paths but one atomic load.
package shard
