"""Checks the layers of the common crate (shared/src): no module imports a
layer above its own (core < app < adapters < edge), and no two modules
import each other, directly or through others. Reads `use crate::...` and
`super::...` paths (comments and test modules aside).

usage: check_layers.py
"""
import os,re,sys
root='shared/src'
mods={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f)
        rel=os.path.relpath(p,root)[:-3]
        parts=rel.split('/')
        if parts[-1] in('mod','lib'): parts=parts[:-1]
        if parts and parts[-1]=='tests': continue
        name='::'.join(parts)
        mods[name]=open(p).read()
def resolve(path, cur):
    # crate::a::b::c -> longest module prefix
    segs=path.split('::')
    for i in range(len(segs),0,-1):
        cand='::'.join(segs[:i])
        if cand in mods: return cand
    return None
edges={m:set() for m in mods}
for m,src in mods.items():
    src=re.sub(r'#\[cfg\(test\)\]\s*mod tests \{.*','',src,flags=re.S)
    src='\n'.join(l for l in src.split('\n') if not l.strip().startswith('//'))
    for u in re.findall(r'crate::([a-z_:]+)',src):
        t=resolve(u.strip(':'),m)
        if t and t!=m and not m.startswith(t+'::') and not t.startswith(m+'::'): edges[m].add(t)
    # super:: uses
    for u in re.findall(r'super::([a-z_]+)',src):
        parent='::'.join(m.split('::')[:-1])
        t=resolve((parent+'::' if parent else '')+u,m)
        if t and t!=m and not m.startswith(t+'::'): edges[m].add(t)
# find cycles via DFS
sys.setrecursionlimit(10000)
cycles=set()
def dfs(start,node,path,seen):
    for n in edges[node]:
        if n==start: cycles.add(tuple(sorted(path)))
        elif n not in seen and n>start:
            dfs(start,n,path+[n],seen|{n})
for m in mods: dfs(m,m,[m],{m})
problems=[]
for c in sorted(cycles): problems.append('import cycle: '+' <-> '.join(c))
# layer check
def layer(m): return m.split('::')[0]
order={'core':0,'app':1,'adapters':2,'edge':3}
for m,ts in edges.items():
    for t in ts:
        if layer(m) in order and layer(t) in order and order[layer(t)]>order[layer(m)]:
            problems.append(f'{m} ({layer(m)}) imports {t} ({layer(t)}), a layer above it')
for p in problems: print('layers:',p)
if problems: sys.exit(f'layer check failed: {len(problems)} problem(s)')
print(f'layer check: {len(mods)} modules, no import cycle, no import against the layers')
