# admin: the operators' listener (metrics, tail, series, stats, dashboard, health). Beside the
# gateway, not above it: it reads the observers, the usage log and the servers, never a route.
ag_layer(DIR admin SOURCES src/admin/admin.c USES util config store obs http tasks gateway
  LINK PkgConfig::UV Threads::Threads)
