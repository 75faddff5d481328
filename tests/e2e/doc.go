// Package e2e runs the docker-compose cluster end to end. It is skipped unless TRIARCH_E2E=1
// (`make e2e` sets it after building the image): it needs Docker and takes a minute.
package e2e
