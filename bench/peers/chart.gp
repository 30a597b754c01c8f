# Throughput and p99 latency by client count, uniform and hot workloads, every peer and
# pattern (medians). Usage: gnuplot -e "dir='bench/peers/results'; out='docs/img/peers'" chart.gp
# Reads dir/chart-{uniform,hot}.dat and .series, written by peers.py report.
do for [kind in "png svg"] {
    if (kind eq "png") { set terminal pngcairo size 1500,1050 font "sans,10" }
    else { set terminal svg size 1500,1050 dynamic font "sans,10" }
    set output out.".".kind
    set multiplot layout 2,2 title "coffer vs PostgreSQL vs Redis on one 2-core machine, same run (medians of the runs)"
    set logscale x 2
    set xtics ("1" 1, "8" 8, "64" 64)
    set xrange [0.8:80]
    set logscale y 10
    set grid ytics xtics
    set key outside bottom center maxrows 4 font "sans,8"
    set xlabel "clients (connections)"
    do for [measure in "throughput p99"] {
        do for [w in "uniform hot"] {
            f = dir."/chart-".w.".dat"
            s = dir."/chart-".w.".series"
            n = int(system("wc -l < ".s))
            if (measure eq "throughput") {
                set title (w eq "uniform" ? "uniform transfers over 100,000 accounts" : "every transfer debits one hot account").": throughput"
                set ylabel "transfers/s (answered)"
                plot for [i=1:n] f using 1:(column(2*i)) with linespoints lw 2 pt 7 title system(sprintf("sed -n %dp '%s'", i, s))
            } else {
                set title (w eq "uniform" ? "uniform transfers" : "hot account").": p99 latency"
                set ylabel "p99 latency, ms"
                plot for [i=1:n] f using 1:(column(2*i+1)) with linespoints lw 2 pt 7 title system(sprintf("sed -n %dp '%s'", i, s))
            }
        }
    }
    unset multiplot
    set output
}
