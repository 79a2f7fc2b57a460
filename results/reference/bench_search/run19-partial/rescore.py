"""Re-scores run 19's partial searches (gap-aimed levels, before the floor cut of 4a24fca)
against run 18's searches, uniform line and random arm, in one box per seed and budget, with
bench_search's own in-budget filter and hypervolume (validation top-1 vs effective MACs; no
re-timing is needed: MACs are counted). Run: .venv/bin/python results/reference/bench_search/run19-partial/rescore.py"""
import sys
sys.path.insert(0, "benchmarks")
import pandas as pd
import bench_search as b
from prunebench.search.pareto import OBJECTIVES, hypervolume, ideal_point, reference_point
_, column, objective = b.COSTS["dynamic"]
objs=[OBJECTIVES["accuracy"], OBJECTIVES[objective]]
R='results/reference/bench_search/'
line=pd.read_csv(R+'run18/dynamic/points/uniform_l1.csv')
dense=40518272
for name in ['search-b0.5-s0','search-b0.5-s1','search-b0.7-s0']:
    bud=float(name.split('-b')[1].split('-')[0])*dense
    s=seed=name[-1]
    arms={'run19':pd.read_csv(R+f'run19-partial/{name}/trials.csv'),
          'run18':pd.read_csv(R+f'run18/dynamic/points/{name}.csv'),
          'line':line, 'random':pd.read_csv(R+f'run18/dynamic/points/random-s{seed}.csv')}
    under={k:b._in_budget(v[v.state=='COMPLETE'] if 'state' in v else v,column,bud) for k,v in arms.items()}
    ne=[f for f in under.values() if len(f)]
    ref,ideal=reference_point(ne,objs),ideal_point(ne,objs)
    print(name,{k:round(hypervolume(f,objs,ref,ideal),4) for k,f in under.items()})
