/* Compiled by ctest (cmake/modules/80-arch.cmake) against two layers' include
 * trees: it must fail in util's (the gateway is above it) and build in the
 * gateway's own. */
#include "util/platform.h"

#include "gateway/gateway.h"

int main(void)
{
    return 0;
}
