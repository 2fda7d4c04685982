# started on Sat Nov 21 23:05:26 2026

5936.11,msec,task-clock,5936110160,100.00,0.989,CPUs utilized
