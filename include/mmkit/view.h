/* mmkit/view.h: dual views of one memory; snapshots without fork. */
#ifndef MMKIT_VIEW_H
#define MMKIT_VIEW_H

#include <mmkit/common.h>

#endif
