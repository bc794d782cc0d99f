// Command outagedrill will run holdfast's outage drill: a fake IdP, a
// downstream, a service wired with every holdfast package and a naive stack,
// driven by the same load through an IdP outage, a downstream outage and the
// recovery. Until the drill lands it says so and exits.
package main

import "fmt"

func main() {
	fmt.Println("holdfast outage drill: not built yet (issue 8). It will compare a service wired with holdfast against a naive stack through an IdP outage, a downstream outage and recovery.")
}
